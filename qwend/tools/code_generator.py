"""`code_generator`: asks the loaded model for code (seed 001): temperature 0.3, code taken out of its fence."""

from __future__ import annotations

import re

from qwend.tools.base import ToolContext, ToolError, tool
from qwend.types import Message, SamplingParams

SYSTEM = (
    "You are an expert {language} programmer. Write production-ready {language} code for the request: "
    "documentation, type hints where the language has them, error handling, comments that explain the logic, "
    "and a short usage example. Answer with one fenced code block."
)
_FENCE = re.compile(r"```[\w+#.-]*[ \t]*\n(.*?)(?:\n```|\Z)", re.DOTALL)


@tool(timeout=300, group="code")
async def code_generator(request: str, context: ToolContext, language: str = "python") -> str:
    """Generate code from a natural-language description using the language model.

    Args:
        request: What the code should do, for example "a function to calculate the factorial of a number".
        language: Programming language of the code (python, javascript, go, java, rust, ...).
    """
    if context.generate is None:
        raise ToolError("code_generator needs a loaded model")
    messages = (
        Message("system", SYSTEM.format(language=language)),
        Message("user", request),
    )
    sampling = SamplingParams(temperature=0.3)  # as long as the code needs; the tool's timeout bounds it
    return extract_code(await context.generate(messages, sampling))


def extract_code(text: str) -> str:
    """The longest fenced block, or the whole text when the model wrote no fence."""
    blocks = _FENCE.findall(text)
    return (max(blocks, key=len) if blocks else text).strip()
