"""The tool endpoints of seed 000 (`/v1/tools`) and seed 001 (`/api/tools`), with exactly their bodies."""

import pytest

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


@pytest.fixture
async def client(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend("```python\nprint('hi')\n```"))) as c:
        yield c


async def test_seed_000_direct_invocation(client):
    reply = await client.post("/v1/tools/get_current_datetime/invoke", json={"arguments": {}})
    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is True and body["error"] is None
    assert body["result"]["datetime"][:4].isdigit() and body["result"]["utc_offset"]


async def test_seed_000_listing_carries_json_schemas(client):
    tools = {t["name"]: t for t in (await client.get("/v1/tools")).json()["tools"]}
    assert tools["calculator"]["parameters"]["required"] == ["expression"]
    assert tools["calculator"]["enabled"] is True
    health = (await client.get("/health")).json()
    assert "get_current_datetime" in health["available_tools"] and "calculator" in health["available_tools"]


async def test_seed_001_calculator_example(client):
    reply = await client.post(
        "/api/tools/execute", json={"tool_name": "calculator", "parameters": {"expression": "2**10 + sqrt(144)"}}
    )
    assert reply.json() == {"success": True, "result": "1036", "error": None}


async def test_seed_001_python_repl_example(client):
    code = 'import math\nprint([x**2 for x in range(1, 6)])\nprint(f"Pi = {math.pi:.2f}")'
    reply = await client.post("/api/tools/execute", json={"tool_name": "python_repl", "parameters": {"code": code}})
    assert reply.json() == {"success": True, "result": "[1, 4, 9, 16, 25]\nPi = 3.14\n", "error": None}


async def test_python_repl_shows_a_last_bare_expression_as_the_interpreter_does(client):
    async def run(code):
        reply = await client.post("/api/tools/execute", json={"tool_name": "python_repl", "parameters": {"code": code}})
        return reply.json()["result"]

    assert await run("123456789 * 987654321") == "121932631112635269\n"
    assert await run("x = 'é'; print(x); x + 'ü'  # a comment") == "é\n'éü'\n"
    assert await run("x = 1") == "" and await run("print(2)") == "2\n"  # None is not shown


async def test_seed_001_code_generator_takes_the_code_out_of_the_fence(client):
    reply = await client.post(
        "/api/tools/execute", json={"tool_name": "code_generator", "parameters": {"request": "say hi"}}
    )
    assert reply.json() == {"success": True, "result": "print('hi')", "error": None}


async def test_seed_001_listing_shape(client):
    tools = {t["name"]: t for t in (await client.get("/api/tools")).json()["tools"]}
    assert tools["calculator"] == {
        "name": "calculator",
        "description": tools["calculator"]["description"],
        "parameters": {
            "expression": {
                "name": "expression", "type": "string", "required": True,
                "description": 'Mathematical expression to evaluate, for example "2**10 + sqrt(144)".',
            }
        },
        "enabled": True,
    }
    assert tools["web_search"]["parameters"]["num_results"]["required"] is False
    assert tools["get_current_datetime"]["parameters"]["timezone"]["type"] == "string"


async def test_enable_disable_and_openai_definitions(client):
    assert (await client.post("/api/tools/calculator/disable")).json()["enabled"] is False
    definitions = (await client.get("/api/tools/definitions/openai")).json()
    names = [d["function"]["name"] for d in definitions]
    assert "calculator" not in names and "python_repl" in names
    assert definitions[0]["type"] == "function" and definitions[0]["function"]["parameters"]["type"] == "object"
    run = await client.post("/api/tools/execute", json={"tool_name": "calculator", "parameters": {"expression": "1"}})
    assert run.json()["success"] is False
    assert (await client.post("/api/tools/calculator/enable")).json()["enabled"] is True
    assert (await client.get("/api/tools")).json()["tools"][0]["enabled"] is True


async def test_a_switch_outlives_a_restart(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        await client.post("/api/tools/calculator/disable")
        await client.post("/api/tools/web_search/disable")
        await client.post("/api/tools/web_search/enable")
        assert (await client.post("/api/tools/nope/disable")).status_code == 404
    restarted = fake_runtime(tmp_path, FakeBackend())  # the same data folder, so the same database
    await restarted.start()
    try:
        assert (restarted.tools.get("calculator").enabled, restarted.tools.get("web_search").enabled) == (False, True)
    finally:
        await restarted.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/tools/nope/invoke", {"arguments": {}}),
        ("post", "/api/tools/execute", {"tool_name": "nope", "parameters": {}}),
        ("post", "/api/tools/nope/enable", None),
        ("post", "/api/tools/read_file/enable", None),  # switched off by configuration
    ],
)
async def test_unknown_tools_are_404(client, method, path, body):
    reply = await client.request(method.upper(), path, json=body)
    assert reply.status_code == 404
    assert reply.json()["detail"].startswith(("no tool named 'nope'", "tool 'read_file' is switched off"))


async def test_invalid_arguments_are_400_naming_the_argument(client):
    reply = await client.post("/v1/tools/calculator/invoke", json={"arguments": {"expression": 42}})
    assert reply.status_code == 400 and reply.json()["detail"].startswith("invalid arguments for calculator: expression")
    reply = await client.post("/api/tools/execute", json={"tool_name": "python_repl", "parameters": {"input": "x"}})
    assert reply.status_code == 400 and "input: Extra inputs are not permitted" in reply.json()["detail"]
    reply = await client.post(
        "/v1/tools/calculator/invoke", content=b'{"arguments": ', headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400 and "not valid JSON" in reply.json()["detail"]
