"""OutputConstraint -> GBNF grammars for llama.cpp's constrained decoding.

Tool calls take Qwen's form, one block per call:
    <tool_call>
    {"name": "<tool>", "arguments": {...}}
    </tool_call>
The call JSON comes from one JSON schema (an anyOf of the offered tools, each with its name as a const and
its parameters schema), so every call names an offered tool and its arguments validate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from qwend.types import ToolSpec

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"


def _literal(text: str) -> str:
    return json.dumps(text)


def _schema_rules(schema: dict, root: str) -> str:
    """The converter's rules for `schema`, its root renamed to `root`."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    rules = json_schema_to_gbnf(json.dumps(schema))
    return re.sub(r"^root ::=", f"{root} ::=", rules, flags=re.MULTILINE)


def call_schema(tools: Sequence[ToolSpec]) -> dict:
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or {"type": "object"}},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for tool in tools
        ]
    }


def calls_grammar(tools: Sequence[ToolSpec], *, parallel: bool) -> str:
    """One call, or with `parallel` one or more, each in its own block."""
    call = f"{_literal(CALL_OPEN)} call-json {_literal(CALL_CLOSE)}"
    root = f'{call} ("\\n" {call})*' if parallel else call
    return f"root ::= {root}\n" + _schema_rules(call_schema(tools), "call-json")


_NAMED = re.compile(r'"name"\s*:\s*"([^"\\]*)"')
# The first character of an answer that must not open a call in any of those forms.
TEXT_ONLY_START = 'root ::= [^<{`[ \\t\\n] [^\\x00]*'


def called_name(text: str) -> str | None:
    """The tool name in the beginning of a call, once it is complete."""
    found = _NAMED.search(text)
    return found.group(1) if found else None


def call_intent(text: str) -> bool | None:
    """Whether an answer that begins with `text` is meant as tool calls, in any form small Qwen models
    use (tag, bare JSON, a list of calls, fenced JSON); None while the beginning is still ambiguous."""
    head = text.lstrip()
    if not head:
        return None
    if head.startswith(("<tool_call>", "{", "[{")):
        return True
    if "<tool_call>".startswith(head) or head == "[":
        return None
    if head.startswith("```"):
        rest = head[3:]
        if rest.startswith("json"):
            rest = rest[4:]
        elif rest and "json".startswith(rest):
            return None  # "```j", "```js"
        rest = rest.lstrip()
        return rest[0] in "{[" if rest else None  # a fence's language and first line tell
    return False


def json_grammar(schema: dict) -> str:
    """One JSON value valid against `schema`; an empty schema means any JSON object."""
    return _schema_rules(schema or {"type": "object"}, "root")
