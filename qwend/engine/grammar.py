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


# The first character of an answer that must not open a call in any of those forms.
TEXT_ONLY_START = 'root ::= [^<{`[ \\t\\n] [^\\x00]*'


def json_grammar(schema: dict) -> str:
    """One JSON value valid against `schema`; an empty schema means any JSON object."""
    return _schema_rules(schema or {"type": "object"}, "root")
