"""The tool registry: schemas from signatures, validation, results, timeouts, configuration and plug-ins."""

import sys

import pytest

from qwend.errors import InvalidToolArguments, ToolNotFound
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.tools.base import from_function, tool


def runtime_with(tmp_path, **settings) -> Runtime:
    return Runtime.create(Settings(_env_file=None, data_dir=tmp_path / "data", **settings))


@pytest.fixture
def runtime(tmp_path):
    return runtime_with(tmp_path, tool_modules=["tests.custom_tools"])


def test_schema_and_description_come_from_the_signature_and_docstring(runtime):
    shout = runtime.tools.get("shout")
    assert shout.description == "Repeat text in capitals."
    assert shout.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "text": {"type": "string", "description": "What to shout."},
            "times": {"type": "integer", "default": 1, "description": "How many times to repeat it."},
        },
        "required": ["text"],
    }
    assert shout.timeout == 2 and shout.source == "tests.custom_tools"
    assert "not_a_tool" not in runtime.tools.names()


def test_the_context_parameter_is_not_part_of_the_schema(runtime):
    assert set(runtime.tools.get("python_repl").parameters["properties"]) == {"code"}
    assert set(runtime.tools.get("code_generator").parameters["properties"]) == {"request", "language"}


async def test_results_have_the_success_result_error_shape(runtime):
    assert (await runtime.tools.invoke("shout", {"text": "hi", "times": 2})).to_dict() == {
        "success": True, "result": "HI HI", "error": None,
    }
    failed = await runtime.tools.invoke("shout", {"text": "hi", "times": -1})
    assert failed.to_dict() == {"success": False, "result": None, "error": "times must not be negative"}


async def test_invalid_arguments_name_the_argument(runtime):
    with pytest.raises(InvalidToolArguments) as missing:
        await runtime.tools.invoke("shout", {})
    assert missing.value.param == "text" and "text: Field required" in missing.value.message
    with pytest.raises(InvalidToolArguments) as wrong_type:
        await runtime.tools.invoke("shout", {"text": "a", "times": "many"})
    assert wrong_type.value.param == "times"
    with pytest.raises(InvalidToolArguments) as extra:
        await runtime.tools.invoke("python_repl", {"input": "print(1)"})
    assert "input: Extra inputs are not permitted" in extra.value.message


async def test_a_hanging_tool_times_out_and_a_crashing_one_reports_its_error(runtime):
    late = await runtime.tools.invoke("sleepy", {})
    assert not late.success and late.error == "sleepy timed out after 0.5 s"
    crashed = await runtime.tools.invoke("broken", {})
    assert not crashed.success and crashed.error == "broken failed: KeyError: 'missing'"


async def test_unknown_tools_raise_not_found(runtime):
    with pytest.raises(ToolNotFound):
        await runtime.tools.invoke("nope", {})


async def test_disabled_tools_are_not_offered_or_run(runtime):
    runtime.tools.set_enabled("calculator", False)
    assert "calculator" not in runtime.tools.names()
    assert "calculator" not in [spec.name for spec in runtime.tools.specs()]
    result = await runtime.tools.invoke("calculator", {"expression": "1+1"})
    assert result.error == "tool 'calculator' is disabled"
    runtime.tools.set_enabled("calculator", True)
    assert (await runtime.tools.invoke("calculator", {"expression": "1+1"})).result == "2"


def test_configuration_switches_groups_of_tools(tmp_path):
    default = runtime_with(tmp_path)
    assert {"web_search", "web_fetch", "python_repl", "code_generator"} <= set(default.tools.names())
    assert "read_file" not in default.tools.names()  # file operations are off by default
    with pytest.raises(ToolNotFound, match="QWEND_ENABLE_FILE_OPERATIONS=true"):
        default.tools.get("read_file")
    switched = runtime_with(tmp_path, enable_web_search=False, enable_code_execution=False, enable_file_operations=True)
    assert {"read_file", "write_file", "list_files"} <= set(switched.tools.names())
    assert not {"web_search", "web_fetch", "python_repl", "code_generator"} & set(switched.tools.names())


def test_seed_001_environment_names_are_read(tmp_path, monkeypatch):
    monkeypatch.setenv("ENABLE_FILE_OPERATIONS", "True")
    monkeypatch.setenv("ENABLE_WEB_SEARCH", "False")
    names = runtime_with(tmp_path).tools.names()
    assert "read_file" in names and "web_search" not in names


def test_duplicate_names_raise(runtime):
    @tool(name="calculator")
    def impostor() -> str:
        """Not the real one."""
        return ""

    with pytest.raises(ValueError, match="already registered"):
        runtime.tools.register(from_function(impostor))


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    dist = tmp_path / "plugin" / "qwend_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qwend-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[qwend.tools]\nshout = tests.custom_tools:shout\nbad = no.such:thing\n")
    monkeypatch.syspath_prepend(str(tmp_path / "plugin"))
    runtime = runtime_with(tmp_path)
    assert runtime.tools.get("shout").source == "entry point shout"
    assert "tests.custom_tools" in sys.modules  # `bad` failed to import and was skipped, not fatal
