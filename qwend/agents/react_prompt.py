"""The text the ReAct agent shows the model: seed 001's format rules, the tools with every parameter, worked
examples, and the messages that carry observations and plans.

Small models copy what they see, so the prompt spells out the exact format and parameter names and shows
each built-in tool used correctly (seed 001: "Concrete examples ... exact parameter names").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from qwend.agents.loop import bounded
from qwend.tools.base import Tool, ToolResult
from qwend.types import Message

FINISH = "finish"
MAX_OBSERVATION_CHARS = 2000  # what the model re-reads of a tool result on every later iteration

# (tool, note, thought, arguments): shown only for enabled tools, so no example names a missing tool.
EXAMPLES: tuple[tuple[str, str, str, str], ...] = (
    ("calculator", 'calculator tool requires "expression" parameter',
     "I need to calculate 2 to the power of 10. I will use the calculator.", '{"expression": "2**10"}'),
    ("python_repl", 'python_repl tool requires "code" parameter (NOT "input")',
     "I need to execute Python code to create a list", '{"code": "print([x**2 for x in range(5)])"}'),
    ("web_search", 'web_search tool requires "query" parameter',
     "I need current information about Python releases. I will search the web.", '{"query": "latest Python release"}'),
    ("get_current_datetime", "get_current_datetime has only optional parameters", "I need today's date.", "{}"),
)

SYSTEM = """You are a ReAct agent. You reach the user's goal by thinking step by step and using tools.

Available tools:
{tools}
- finish: Give the final answer and stop.
    - answer (string, required): the final answer to the goal.

Answer in EXACTLY this format, one step per reply:
Thought: <your reasoning about what to do next>
Action: <one of: {names}>
Action Input: <a JSON object with the tool's parameters>

Rules:
1. Action is only the tool name. Action Input is one JSON object on one line, with double quotes and the
parameter names listed above.
2. Write one Thought, one Action and one Action Input, then stop. Never write "Observation:" yourself: the
tool's result is sent back to you as "Observation: ...".
3. Use a tool for arithmetic instead of computing in your head.
4. As soon as an observation answers the goal, use Action: finish with Action Input: {{"answer": "..."}}.
5. If an observation starts with "Error:", fix the Action or Action Input and try again.

Examples:
{examples}"""

FINISH_EXAMPLE = """Example {n} - after "Observation: Success: 1024", finish with the answer:
Thought: I have the answer. 2**10 equals 1024.
Action: finish
Action Input: {"answer": "1024"}"""

# Worked runs shown as real turns before the goal, when the calculator is there to show them with. The 0.5B
# default model ignores rules it is only told: with the examples in the system prompt alone it repeated its
# first step until max_iterations on 3 of 3 goals; with these turns it finished 12 of 12 runs. Other numbers
# than seed 001's goals (5!, 2**10), so the model copies the pattern, not the answer; the first shows it how
# to recover from a tool error, since without it the model retried a failing expression unchanged.
DEMONSTRATION: tuple[tuple[str, str], ...] = (
    ("user", "Goal: What is 1,200 divided by 4?\n\nStart with a Thought."),
    ("assistant", 'Thought: I need to divide 1,200 by 4. I will use the calculator.\nAction: calculator\n'
                  'Action Input: {"expression": "1,200 / 4"}'),
    ("user", "Observation: Error: Tuple is not allowed in an expression"),
    ("assistant", 'Thought: The calculator failed on the comma, so I change the input and write 1200 without it.\n'
                  'Action: calculator\nAction Input: {"expression": "1200 / 4"}'),
    ("user", "Observation: Success: 300"),
    ("assistant", 'Thought: The observation gives the result, 300. That answers the goal.\nAction: finish\n'
                  'Action Input: {"answer": "300"}'),
    ("user", "Goal: What is 3 to the power of 4?\n\nStart with a Thought."),
    ("assistant", 'Thought: I need to calculate 3 to the power of 4. I will use the calculator.\n'
                  'Action: calculator\nAction Input: {"expression": "3**4"}'),
    ("user", "Observation: Success: 81"),
    ("assistant", 'Thought: The observation gives the result, 81. That answers the goal.\nAction: finish\n'
                  'Action Input: {"answer": "81"}'),
)

PLAN_SYSTEM = """You are a planning assistant. Write a short plan to achieve the user's goal with these tools:
{tools}

Rules: write 2 to 6 numbered steps, one short line each, like "1. Use calculator to ...". Name the tool each
step uses. The last step is "Provide final answer". Do not carry out the plan: no results, no code."""

# One plan shown as real turns (when its tools are enabled): told the rules alone, the 0.5B model wrote the
# results into its steps and rambled until max_tokens; shown one, it answers in the same terse shape.
PLAN_DEMONSTRATION = (
    ("web_search", "calculator"),
    "Goal: Find the population of France and calculate 10% of it",
    "1. Use web_search to find the population of France\n2. Use calculator to compute 10% of that number\n"
    "3. Provide final answer",
)


def system_prompt(tools: Iterable[Tool]) -> str:
    """The agent's instructions: every tool with its parameters, the format, the rules and examples."""
    tools = list(tools)
    names = ", ".join([t.name for t in tools] + [FINISH])
    enabled = {t.name for t in tools}
    examples = []
    for name, note, thought, arguments in EXAMPLES:
        if name in enabled:
            examples.append(f"Example {len(examples) + 1} - {note}:\n"
                            f"Thought: {thought}\nAction: {name}\nAction Input: {arguments}")
    examples.append(FINISH_EXAMPLE.replace("{n}", str(len(examples) + 1)))
    return SYSTEM.format(tools=tool_listing(tools), names=names, examples="\n\n".join(examples))


def opening(tools: Iterable[Tool], goal: str, context: Mapping[str, Any] | None) -> list[Message]:
    """The messages every run starts with: instructions, the worked runs (when the calculator is enabled)
    and the goal. They are the same for every goal up to the last one, so the backend reuses their KV."""
    tools = list(tools)
    shown = DEMONSTRATION if any(t.name == "calculator" for t in tools) else ()
    return [Message("system", system_prompt(tools)), *(Message(role, text) for role, text in shown),
            Message("user", goal_message(goal, context))]


def tool_listing(tools: Iterable[Tool]) -> str:
    """One line per tool and one per parameter: name, type, required or optional, description."""
    lines = []
    for tool in tools:
        lines.append(f"- {tool.name}: {tool.description}")
        parameters = parameter_lines(tool.parameters)
        lines.extend(f"    - {p}" for p in parameters or ["(no parameters)"])
    return "\n".join(lines)


def parameter_lines(schema: Mapping[str, Any]) -> list[str]:
    """`name (type, required): description` for each parameter of a JSON schema."""
    required = set(schema.get("required", []))
    lines = []
    for name, prop in schema.get("properties", {}).items():
        need = "required" if name in required else "optional"
        description = prop.get("description", "")
        lines.append(f"{name} ({type_name(prop)}, {need}){': ' + description if description else ''}")
    return lines


def type_name(prop: Mapping[str, Any]) -> str:
    """The JSON type of one parameter; `anyOf [T, null]` (an optional argument) reads as T."""
    kind = prop.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "any")
    options = [o.get("type") for o in prop.get("anyOf", []) if o.get("type") not in (None, "null")]
    return options[0] if options else "any"


def goal_message(goal: str, context: Mapping[str, Any] | None) -> str:
    """The user turn that opens a run: the goal, and the client's context when it sent one."""
    text = f"Goal: {goal}"
    if context:
        text += "\nContext: " + json.dumps(context, ensure_ascii=False, default=str)
    return text + "\n\nStart with a Thought."


def observation_message(observation: str) -> str:
    """The user turn that carries a tool's result back to the model."""
    return f"Observation: {observation}"


def observation_text(result: ToolResult) -> str:
    """Seed 001's `Success: <result>` / `Error: <error>`, JSON for non-text results, bounded in length."""
    if not result.success:
        text = f"Error: {result.error}"
    else:
        value = result.result
        value = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
        text = f"Success: {value.strip()}"
    return bounded(text, MAX_OBSERVATION_CHARS)


REPEATED = "you already ran {tool} with this exact input"


def repeated(tool: str, earlier: str) -> str:
    """The observation for a call identical to an earlier one, which is not run again."""
    advice = ("Change the Action Input to avoid that error, or use another tool." if earlier.startswith("Error:")
              else "Use that result: if it answers the goal, finish with it.")
    return f"{REPEATED.format(tool=tool)}; the observation was: {earlier}\n{advice}"


def answer_messages(goal: str, observations: Iterable[str]) -> tuple[Message, ...]:
    """The conversation for an answer without tools, once the run's tools have stopped helping (the model
    asked again for a call that failed): the goal and what the tools said, asked for the answer itself."""
    tried = "\n".join(f"- {text}" for text in observations) or "- nothing"
    return (Message("system", "You answer the user's goal directly, in one or two sentences."),
            Message("user", f"Goal: {goal}\n\nWhat the tools returned:\n{tried}\n\n"
                            "The tools cannot help further. Answer the goal now from what you know."))


def format_help(names: Iterable[str]) -> str:
    """What the model is told when its reply had no usable Action."""
    return ("your reply did not follow the format. Reply with:\nThought: <your reasoning>\n"
            f"Action: <one of: {', '.join([*names, FINISH])}>\nAction Input: <a JSON object>")


def plan_messages(tools: Iterable[Tool], goal: str) -> tuple[Message, ...]:
    """The conversation for `POST /api/agents/plan`: a numbered plan that names the tools, not carried out."""
    tools = list(tools)
    system = Message("system", PLAN_SYSTEM.format(tools="\n".join(f"- {t.name}: {t.description}" for t in tools)))
    needs, example_goal, example_plan = PLAN_DEMONSTRATION
    shown = (Message("user", example_goal), Message("assistant", example_plan))
    if not set(needs) <= {t.name for t in tools}:
        shown = ()
    return (system, *shown, Message("user", f"Goal: {goal}"))
