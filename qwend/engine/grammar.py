"""OutputConstraint -> GBNF grammars for llama.cpp's constrained decoding.

Tool calls take Qwen's form, one block per call:
    <tool_call>
    {"name": "<tool>", "arguments": {...}}
    </tool_call>
The call JSON comes from one JSON schema (an anyOf of the offered tools, each with its name as a const and
its parameters schema), so every call names an offered tool and its arguments validate.

Models whose template asks for Qwen3-Coder's form (chat/xml_calls.py) get calls in that form instead:
    <tool_call>
    <function=<tool>>
    <parameter=<name>>
    <value: text, a number, true/false, or JSON for objects and arrays>
    </parameter>
    </function>
    </tool_call>
each tool's parameters in the order its schema lists them, the required ones always.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from collections.abc import Sequence
from itertools import accumulate

from typing import Any, Literal

from qwend.errors import InvalidRequest
from qwend.types import OutputConstraint, ToolSpec

# What llama.cpp's grammar parser is given at most. It recurses once per nested group: 30,000 levels (a
# `maxItems: 30000`) overflowed its stack and killed the daemon, 1,000 parse in a millisecond. Schemas are
# bounded where they arrive (qwend/chat/schemas.py); this is the last guard before native code.
MAX_GRAMMAR_CHARS = 1 << 20
MAX_GRAMMAR_NESTING = 1_200
# how llama.cpp's JSON-schema converter refuses what it cannot express, and what is then left to the answer
CONVERTER_REFUSALS = (AssertionError, ValueError, KeyError, TypeError)
LEFT_OUT = frozenset({"pattern", "patternProperties", "not", "if", "then", "else"})
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})  # values, not schemas
NAMED_SUBSCHEMAS = frozenset({"properties", "$defs", "definitions", "dependentSchemas"})
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]')  # GBNF literals and classes (linear)

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
FUNCTION_OPEN, FUNCTION_CLOSE = "<function=", "</function>"
PARAMETER_OPEN, PARAMETER_CLOSE = "<parameter=", "</parameter>"
_VALUE_END = f"\n{PARAMETER_CLOSE}\n"  # a value's own line ends before its closing tag's
CallForm = Literal["json", "xml"]
_XML_SCALARS = {"integer": "xml-integer", "number": "xml-number", "boolean": '"true" | "false"', "null": '"null"'}


def _literal(text: str) -> str:
    return json.dumps(text)


def _text_without(end: str) -> str:
    """GBNF for any text that does not contain `end` (a tag of ASCII characters)."""
    tails = " | ".join(f"{_literal(end[:i])} [^{end[i]}]" for i in range(1, len(end)))
    return f"([^{end[0]}] | {tails})*"


# Qwen3-Coder's values: text up to their closing tag, or a number, a boolean, null
_XML_RULES = (
    f"xml-text ::= {_text_without(PARAMETER_CLOSE)}\n"
    'xml-integer ::= "-"? [0-9]+\n'
    'xml-number ::= "-"? [0-9]+ ("." [0-9]+)? ([eE] [-+]? [0-9]+)?\n'
    f'xml-parameter ::= {_literal(PARAMETER_OPEN)} [a-zA-Z0-9_.-]+ ">\\n" xml-text {_literal(_VALUE_END)}\n'
)


def _schema_rules(schema: dict, root: str) -> str:
    """The converter's rules for `schema`, its root renamed to `root`. Keywords the converter cannot express
    (a pattern that is not anchored or uses `(?:`, `not`, `if`) are left out of the grammar, as `format` is:
    the answer is still checked against the whole schema where it is a tool call's."""
    try:
        rules = _convert(schema)
    except CONVERTER_REFUSALS:
        try:
            rules = _convert(_expressible(schema))
        except CONVERTER_REFUSALS as exc:
            raise InvalidRequest(f"the schema cannot be enforced by a grammar: {exc}") from None
    return re.sub(r"^root ::=", f"{root} ::=", _bounded(rules), flags=re.MULTILINE)


def _convert(schema: dict) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except RecursionError:
        raise InvalidRequest("the schema is nested too deeply to enforce") from None


def _expressible(node):
    """`node` without the keywords llama.cpp's converter may refuse (LEFT_OUT); values stay as they are, and
    the names in a mapping of subschemas (`properties`) are names, never keywords."""
    if isinstance(node, list):
        return [_expressible(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept = {}
    for key, value in node.items():
        if key in LEFT_OUT:
            continue
        if key in DATA_KEYWORDS:
            kept[key] = value
        elif key in NAMED_SUBSCHEMAS and isinstance(value, dict):
            kept[key] = {name: _expressible(subschema) for name, subschema in value.items()}
        else:
            kept[key] = _expressible(value)
    return kept


def for_constraint(constraint: OutputConstraint, *, loose: bool = False, form: CallForm = "json") -> str:
    """The GBNF that enforces `constraint`'s shape (calls in the model's `form`, or a JSON value), "" when
    nothing is shaped; a 400 for a schema past what llama.cpp's parser is given. `loose` leaves out what the
    converter may get wrong (LEFT_OUT), for a grammar llama.cpp would not parse."""
    shape = _expressible if loose else (lambda schema: schema)
    if constraint.json_schema is not None:
        return json_grammar(shape(constraint.json_schema))
    tools = [replace(t, parameters=shape(t.parameters)) for t in constraint.tools]
    if not tools:
        return ""
    calls = xml_calls_grammar if form == "xml" else calls_grammar
    return calls(tools, parallel=constraint.parallel, first=constraint.first_call)


def _bounded(rules: str) -> str:
    """`rules`, or a 400 when they are past what llama.cpp's parser is given (MAX_GRAMMAR_*)."""
    if len(rules) > MAX_GRAMMAR_CHARS:
        raise InvalidRequest(f"the output grammar would be {len(rules)} characters, more than {MAX_GRAMMAR_CHARS}")
    if nesting(rules) > MAX_GRAMMAR_NESTING:
        raise InvalidRequest(f"the output grammar would nest groups deeper than {MAX_GRAMMAR_NESTING} levels")
    return rules


def nesting(rules: str) -> int:
    """How deeply parentheses nest in GBNF `rules`, outside string literals and character classes."""
    parens = re.findall(r"[()]", _QUOTED.sub("", rules))
    return max(accumulate(1 if p == "(" else -1 for p in parens), default=0)


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


def calls_grammar(tools: Sequence[ToolSpec], *, parallel: bool, first: str | None = None) -> str:
    """One call, or with `parallel` one or more, each in its own block; the first to the tool named `first`
    where one is."""
    rules = _schema_rules(call_schema(tools), "call-json")
    call = f"{_literal(CALL_OPEN)} call-json {_literal(CALL_CLOSE)}"
    head = call
    if first is not None:
        # the converter's own rule for the anyOf's alternative that is this tool's call
        alternative = f"alternative-{[t.name for t in tools].index(first)}"
        if re.search(rf"^{alternative} ::=", rules, flags=re.MULTILINE):
            head = f"{_literal(CALL_OPEN)} {alternative} {_literal(CALL_CLOSE)}"
    root = f'{head} ("\\n" {call})*' if parallel else head
    return f"root ::= {root}\n" + rules


def xml_calls_grammar(tools: Sequence[ToolSpec], *, parallel: bool, first: str | None = None) -> str:
    """As calls_grammar, in Qwen3-Coder's form: parameters as tags, in the order each schema lists them."""
    as_json: list[dict] = []  # the schemas of values written as JSON (objects, arrays), converted together
    functions = []
    for index, tool in enumerate(tools):
        schema = tool.parameters if isinstance(tool.parameters, dict) else {}
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = set(schema.get("required") or ())
        parts = []
        for name, value_schema in properties.items():
            opening = _literal(f"{PARAMETER_OPEN}{name}>\n")
            part = f"{opening} ({_xml_value(value_schema, as_json)}) {_literal(_VALUE_END)}"
            parts.append(part if name in required else f"({part})?")
        if not properties and schema.get("additionalProperties") is not False:
            parts.append("xml-parameter*")  # a tool that does not list its parameters
        opening = _literal(f"{FUNCTION_OPEN}{tool.name}>\n")
        functions.append(f"function-{index} ::= {opening} {' '.join(parts)} {_literal(FUNCTION_CLOSE)}")
    rules = "\n".join(functions) + "\n" + _XML_RULES
    if as_json:
        converted = _schema_rules({"anyOf": as_json}, "xml-json")
        for i in range(len(as_json)):  # (a value whose alternative the converter did not name: text)
            if not re.search(rf"^alternative-{i} ::=", converted, flags=re.MULTILINE):
                rules = rules.replace(f"(alternative-{i})", "(xml-text)")
        rules += converted
    call = f"{_literal(CALL_OPEN)} ({' | '.join(f'function-{i}' for i in range(len(tools)))}) {_literal(CALL_CLOSE)}"
    head = call
    if first is not None and first in (names := [t.name for t in tools]):
        head = f"{_literal(CALL_OPEN)} function-{names.index(first)} {_literal(CALL_CLOSE)}"
    root = f'{head} ("\\n" {call})*' if parallel else head
    return _bounded(f"root ::= {root}\n" + rules)


def _xml_value(schema: Any, as_json: list[dict]) -> str:
    """The GBNF of one parameter's value as Qwen3-Coder writes it: text where a string is allowed (or the
    schema says nothing), a number, a boolean, null, one of an enum's values, else JSON."""
    if isinstance(schema, dict) and "const" in schema:
        return _literal(_as_text(schema["const"]))
    if isinstance(schema, dict) and isinstance(schema.get("enum"), list) and schema["enum"]:
        return " | ".join(_literal(_as_text(value)) for value in schema["enum"])
    types = schema_types(schema)
    if not types or "string" in types:
        return "xml-text"
    if types <= _XML_SCALARS.keys():
        return " | ".join(_XML_SCALARS[t] for t in sorted(types))
    as_json.append(schema)
    return f"alternative-{len(as_json) - 1}"  # the converter's rule for that alternative of the anyOf


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def schema_types(schema: Any) -> set[str]:
    """The JSON types a schema allows (through anyOf/oneOf, and an enum's values); empty: any."""
    if not isinstance(schema, dict):
        return set()
    declared = schema.get("type")
    declared = [declared] if isinstance(declared, str) else declared if isinstance(declared, list) else []
    types = {t for t in declared if isinstance(t, str)}
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            types |= schema_types(option)
    if not types and isinstance(schema.get("enum"), list):
        types = {_json_type(value) for value in schema["enum"]}
    return types


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string" if isinstance(value, str) else "object"


# The first character of an answer that must not open a call in any of those forms.
TEXT_ONLY_START = 'root ::= [^<{`[ \\t\\n] [^\\x00]*'
# ... nor a call's tag or bare JSON, while it may open a code fence: for text the model itself began as text
NO_CALL_START = 'root ::= [^<{[] [^\\x00]*'


def json_grammar(schema: dict) -> str:
    """One JSON value valid against `schema`; an empty schema means any JSON object."""
    return _schema_rules(schema or {"type": "object"}, "root")
