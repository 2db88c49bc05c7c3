"""No code runs from data: (a) a scan of qwend/ for eval, exec, unpickling, unsafe YAML, unsandboxed Jinja2
and shell commands; (b) templates sent in requests never reach the renderer, and a hostile template in a
model file is stopped by the sandbox (reliability.md checklist items 9 and 30; item 31, the parsers of model
output on pathological text, is tests/unit/test_pathological_output.py). Part of the robustness suite with
tests/real/test_robustness.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qwend
from qwend.api.wire.jsonrpc import PARSE_ERROR, RpcError, parse_call
from qwend.chat.schemas import prepare_schema
from qwend.engine.base import TemplatedPrompts
from qwend.engine.template import ChatTemplate
from qwend.errors import BackendError, InvalidRequest
from qwend.types import Message
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

PACKAGE = Path(qwend.__file__).parent

# -- (a) a scan of every module for calls that run data as code

# module -> the callables in it that read data as code (pickle.loads runs whatever the bytes say)
UNSAFE_CALLS = {
    "pickle": {"load", "loads", "Unpickler"}, "_pickle": {"load", "loads", "Unpickler"},
    "cPickle": {"load", "loads"}, "dill": {"load", "loads"}, "cloudpickle": {"load", "loads"},
    "marshal": {"load", "loads"}, "shelve": {"open"},
    "yaml": {"unsafe_load", "full_load", "unsafe_load_all", "full_load_all"},
    "os": {"system", "popen", "execl", "execlp", "execv", "execvp"},
    "asyncio": {"create_subprocess_shell"},
    "subprocess": {"getoutput", "getstatusoutput"},
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader"}
# Jinja2 names that compile templates; only ImmutableSandboxedEnvironment may (engine/template.py: model templates)
JINJA_COMPILERS = {"Environment", "Template", "SandboxedEnvironment", "NativeEnvironment", "NativeTemplate",
                   "ImmutableSandboxedEnvironment"}
JINJA_ALLOWED = {"ImmutableSandboxedEnvironment"}
# Allow-list: (module relative to qwend/, what) with the reason. Empty today. (tools/sandbox.py's bootstrap
# calls exec, but inside a string run by the interpreter in the bubblewrap sandbox: the scan does not see it,
# as it should not; tests/real/test_sandbox.py tests that boundary.)
ALLOWED: dict[tuple[str, str], str] = {}


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and (base := _dotted(node.value)) is not None:
        return f"{base}.{node.attr}"
    return None


def unsafe_calls(source: str) -> list[str]:
    """What in `source` runs data as code, one line per finding ('line: what')."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> module.name it stands for
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[name.asname or name.name.split(".")[0]] = name.name if name.asname else name.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        if dotted is None:
            continue
        head, _, rest = dotted.partition(".")
        full = aliases.get(head, head) + (f".{rest}" if rest else "")
        module, _, attr = full.rpartition(".")
        keywords = {k.arg: k.value for k in node.keywords}
        where = f"{node.lineno}: {full}"
        if full in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(where)
        elif full in ("compile", "builtins.compile") and not (node.args and isinstance(node.args[0], ast.Constant)):
            found.append(f"{where} on a non-literal")
        elif attr in UNSAFE_CALLS.get(module.split(".")[0], ()):
            found.append(where)
        elif full in ("yaml.load", "yaml.load_all"):
            loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or (_dotted(loader) or "").rpartition(".")[2] not in SAFE_YAML_LOADERS:
                found.append(f"{where} without SafeLoader")
        elif module.startswith("jinja2") and attr in JINJA_COMPILERS - JINJA_ALLOWED:
            found.append(where)
        elif "shell" in keywords and not (isinstance(keywords["shell"], ast.Constant)
                                          and keywords["shell"].value is False):
            found.append(f"{where} with shell=")
        elif full == "torch.load" and not (isinstance(keywords.get("weights_only"), ast.Constant)
                                           and keywords["weights_only"].value is True):
            found.append(f"{where} without weights_only=True")
        elif attr == "load" and module in ("numpy", "np") and "allow_pickle" in keywords:
            found.append(f"{where} with allow_pickle")
    return found


@pytest.mark.parametrize("snippet", [
    "eval(text)", "exec(code)", "import builtins\nbuiltins.eval(x)", "compile(source, 'f', 'exec')",
    "import pickle\npickle.loads(b)", "from pickle import loads\nloads(b)", "import pickle as p\np.load(f)",
    "import marshal\nmarshal.loads(b)", "import yaml\nyaml.load(s)", "import yaml\nyaml.load(s, Loader=yaml.Loader)",
    "import yaml\nyaml.unsafe_load(s)", "import jinja2\njinja2.Environment().from_string(t)",
    "from jinja2 import Template\nTemplate(t)",
    "from jinja2.sandbox import SandboxedEnvironment\nSandboxedEnvironment()",
    "import subprocess\nsubprocess.run(cmd, shell=True)", "import subprocess as sp\nsp.Popen(c, shell=flag)",
    "import os\nos.system(c)", "import asyncio\nasyncio.create_subprocess_shell(c)", "import torch\ntorch.load(f)",
])
def test_the_scan_finds_each_unsafe_call(snippet):
    assert len(unsafe_calls(snippet)) == 1, snippet


@pytest.mark.parametrize("snippet", [
    "import re\nre.compile(p)", "compile('1', 'f', 'eval')", "model.eval()", "import ast\nast.literal_eval(s)",
    "import yaml\nyaml.load(s, Loader=yaml.SafeLoader)", "import yaml\nyaml.safe_load(s)",
    "from jinja2.sandbox import ImmutableSandboxedEnvironment\nImmutableSandboxedEnvironment().from_string(t)",
    "import subprocess\nsubprocess.run(['ls'])", "import subprocess\nsubprocess.run(c, shell=False)",
    "import json\njson.loads(s)", "import torch\ntorch.load(f, weights_only=True)",
])
def test_the_scan_passes_safe_calls(snippet):
    assert unsafe_calls(snippet) == [], snippet


def test_no_module_of_qwend_runs_data_as_code():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50  # the scan really walks the package
    found = []
    for module in modules:
        name = str(module.relative_to(PACKAGE))
        hits = unsafe_calls(module.read_text())
        found += [f"{name}:{hit}" for hit in hits if (name, hit.split(": ")[1]) not in ALLOWED]
    assert found == []


def test_templates_compile_only_in_the_immutable_sandbox():
    """The only Jinja2 environment qwend makes is engine/template.py's ImmutableSandboxedEnvironment."""
    makers = []
    for module in sorted(PACKAGE.rglob("*.py")):
        source = module.read_text()
        imported = {
            alias.name if isinstance(node, ast.Import) else node.module or ""
            for node in ast.walk(ast.parse(source)) if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        # transformers' apply_chat_template renders templates too (in its own sandbox): qwend renders itself
        if any(name.split(".")[0] == "jinja2" for name in imported) or "apply_chat_template" in source:
            makers.append(str(module.relative_to(PACKAGE)))
    assert makers == ["engine/template.py"]
    source = (PACKAGE / "engine" / "template.py").read_text()
    assert "ImmutableSandboxedEnvironment(" in source and source.count("from_string(") == 1


# -- (b) request templates are ignored; a hostile model template is stopped


class TemplatedFake(FakeBackend):
    """The scripted backend, rendering prompts with the real renderer (Qwen's ChatML) in its sandbox."""

    def __init__(self) -> None:
        super().__init__("Fine.", context_length=8192)
        self.template = ChatTemplate(None)

    def render(self, messages, tools=(), thinking=None):
        prompt = TemplatedPrompts.render(self, messages, tools)
        self.prompts.append(prompt)
        return prompt


INJECTED = {
    "chat_template": "{{ 7 * 7 }}INJECTED{% for m in messages %}{{ m.content }}{% endfor %}",
    "chat_template_kwargs": {"add_generation_prompt": False, "tokenize": True, "enable_thinking": True,
                             "continue_final_message": True, "custom": "INJECTED"},
    "add_generation_prompt": False, "continue_final_message": True, "add_special_tokens": True,
    "documents": [{"title": "INJECTED", "text": "INJECTED"}], "template": "INJECTED {{ 7 * 7 }}",
}
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello!"}]


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"messages": MESSAGES}),
    ("/chat/completions", {"messages": MESSAGES}),  # seed 004
    ("/api/chat/completions", {"messages": MESSAGES}),  # seed 001
    ("/api/chat", {"messages": MESSAGES, "stream": False}),  # Ollama
])
async def test_a_template_in_the_request_does_not_change_the_prompt(tmp_path, path, body):
    backend = TemplatedFake()
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        plain = await client.post(path, json=body)
        injected = await client.post(path, json={**body, **INJECTED})
    assert plain.status_code == injected.status_code == 200, injected.text
    assert len(backend.prompts) == 2 and backend.prompts[0] == backend.prompts[1]
    assert "INJECTED" not in backend.prompts[1] and "49" not in backend.prompts[1]
    assert backend.prompts[1].endswith("<|im_start|>assistant\n")  # the generation prompt stays


async def test_ollama_generate_refuses_a_request_template(tmp_path):
    async with client_for(fake_runtime(tmp_path, TemplatedFake())) as client:
        reply = await client.post("/api/generate", json={"prompt": "hi", "template": "{{ 7 * 7 }}", "stream": False})
    assert reply.status_code == 400 and "template" in reply.json()["error"]


@pytest.mark.parametrize("payload", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ messages.append(1) }}{{ messages }}",  # immutable: no mutating a request's data
    "{% for m in messages %}{{ m.update({'role': 'system'}) }}{% endfor %}",
    "{{ raise_exception.__globals__.keys() }}",
    "{{ strftime_now.__globals__['__builtins__'] }}",
])
def test_a_hostile_model_template_is_stopped_by_the_sandbox(payload):
    with pytest.raises(BackendError, match="chat template failed"):
        ChatTemplate(payload).render([Message("user", "hi")])


# -- deeply nested JSON from clients: a clear 400 (or kept as text), never a RecursionError (a 500)


def test_schemas_nested_too_deeply_are_refused_before_anything_recurses():
    schema: dict = {"type": "string"}
    for _ in range(200):
        schema = {"type": "object", "properties": {"a": schema}}
    with pytest.raises(InvalidRequest, match="nested deeper"):
        prepare_schema(schema, param="tools[0].function.parameters")
    fine: dict = {"type": "string"}
    for _ in range(20):
        fine = {"type": "object", "properties": {"a": fine}, "required": ["a"]}
    assert prepare_schema(fine, param="p") == fine


DEEP = "[" * 100_000


async def test_deeply_nested_arguments_in_a_request_are_not_a_500(tmp_path):
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": DEEP}}
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": "ok"}]
    async with client_for(fake_runtime(tmp_path, TemplatedFake())) as client:
        openai = await client.post("/v1/chat/completions", json={"messages": history})
        ollama = await client.post("/api/chat", json={"messages": history, "stream": False})
    assert openai.status_code == 200, openai.text  # kept as the text it is
    assert ollama.status_code == 400 and "arguments" in ollama.json()["error"]
    with pytest.raises(RpcError) as raised:
        parse_call(DEEP)
    assert raised.value.code == PARSE_ERROR
