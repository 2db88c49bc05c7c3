"""A custom tool module, loaded by name through `tool_modules` (seed 001's "Adding Custom Tools")."""

from qwend.tools.base import ToolError, tool


@tool(timeout=2)
def shout(text: str, times: int = 1) -> str:
    """Repeat text in capitals.

    Args:
        text: What to shout.
        times: How many times to repeat it.
    """
    if times < 0:
        raise ToolError("times must not be negative")
    return " ".join([text.upper()] * times)


@tool(timeout=0.5)
async def sleepy() -> str:
    """Never answers in time."""
    import asyncio

    await asyncio.sleep(30)
    return "late"


@tool
def broken() -> str:
    """Has a bug."""
    return {}["missing"]


def not_a_tool() -> None:
    """Plain functions in the module are ignored."""
