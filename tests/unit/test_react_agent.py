"""Seed 001's ReAct agent on scripted replies: the loop, the tolerant parser, and the `/api/agents/*` bodies."""

import asyncio
import json

import pytest

from qwend.agents.react import parse_input, parse_step
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend

EXECUTE = "/api/agents/execute"
CALC = 'Thought: I need to calculate 2^10. I should use the calculator tool.\nAction: calculator\n' \
       'Action Input: {"expression": "2**10"}'
FINISH = 'Thought: I have the answer. 2^10 equals 1024.\nAction: finish\nAction Input: {"answer": "1024"}'
SCHEMAS = {
    "calculator": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    "python_repl": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
}


async def execute(tmp_path, replies, body=None, **settings):
    backend = FakeBackend(replies=replies, context_length=16384)
    async with client_for(fake_runtime(tmp_path, backend, **settings)) as client:
        reply = await client.post(EXECUTE, json={"goal": "What is 2 to the power of 10?", **(body or {})})
    return reply, backend


async def test_seed_example_calculator_then_finish(tmp_path):
    reply, backend = await execute(tmp_path, [CALC, FINISH], {"max_iterations": 5, "verbose": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert set(body) == {"success", "final_answer", "steps", "metadata"}
    assert body["success"] is True and body["final_answer"] == "1024"
    assert body["steps"] == [
        {"step_number": 1, "thought": "I need to calculate 2^10. I should use the calculator tool.",
         "action": "calculator", "action_input": {"expression": "2**10"}, "observation": "Success: 1024",
         "status": "observing"},
        {"step_number": 2, "thought": "I have the answer. 2^10 equals 1024.", "action": "finish",
         "action_input": {"answer": "1024"}, "observation": None, "status": "completed"},
    ]
    meta = body["metadata"]
    assert meta["iterations"] == 2 and meta["goal"] == "What is 2 to the power of 10?"
    assert meta["stopped_reason"] == "finished" and meta["model"] == "fake.gguf" and meta["max_iterations"] == 5
    # the second prompt is the first one plus the step and its observation: earlier text never changes
    first, second = backend.prompts
    assert second.startswith(first.removesuffix("<assistant>"))
    assert "<assistant>" + CALC + "<user>Observation: Success: 1024<assistant>" in second


async def test_prompt_lists_tools_parameters_rules_and_context(tmp_path):
    _, backend = await execute(tmp_path, [FINISH], {"context": {"user_preference": "detailed explanations"}})
    prompt = backend.prompts[0]
    assert "- calculator: Evaluate a mathematical expression" in prompt
    assert "    - expression (string, required): Mathematical expression" in prompt
    assert "    - num_results (integer, optional)" in prompt
    assert 'python_repl tool requires "code" parameter (NOT "input")' in prompt
    assert "Action: <one of: calculator, " in prompt and ", finish>" in prompt
    assert 'Goal: What is 2 to the power of 10?\nContext: {"user_preference": "detailed explanations"}' in prompt


async def test_the_model_is_stopped_before_it_invents_an_observation(tmp_path):
    invented = CALC + "\nObservation: Success: 999\nThought: done\nAction: finish\nAction Input: {\"answer\": \"999\"}"
    body = (await execute(tmp_path, [invented, FINISH]))[0].json()
    assert body["steps"][0]["observation"] == "Success: 1024" and body["final_answer"] == "1024"


async def test_max_iterations_reached(tmp_path):
    calls = [CALC.replace("2**10", f"2**{n}") for n in (10, 11, 12)]  # new calls: a repeat would end the run
    reply, backend = await execute(tmp_path, calls, {"max_iterations": 3})
    body = reply.json()
    assert body["success"] is False and body["final_answer"] is None
    assert [s["step_number"] for s in body["steps"]] == [1, 2, 3]
    assert body["metadata"]["iterations"] == 3 and body["metadata"]["stopped_reason"] == "max_iterations"
    assert len(backend.prompts) == 3


async def test_settings_bound_iterations_and_verbose(tmp_path):
    reply, _ = await execute(tmp_path, ["I am not sure."], max_agent_iterations=2, default_agent_verbose=False)
    body = reply.json()
    # `verbose` (here DEFAULT_AGENT_VERBOSE=false) switches the step log; the seed's answer holds the steps always
    assert len(body["steps"]) == 2 and body["metadata"]["iterations"] == 2 and body["success"] is False


async def test_unparseable_reply_asks_for_the_format_and_counts(tmp_path):
    body = (await execute(tmp_path, ["The answer is 1024.", FINISH]))[0].json()
    first = body["steps"][0]
    assert first["status"] == "error" and first["action"] is None
    assert first["observation"].startswith("Error: your reply did not follow the format")
    assert body["success"] is True and body["metadata"]["iterations"] == 2


async def test_unknown_tool_lists_the_valid_names(tmp_path):
    wrong = 'Thought: search\nAction: google\nAction Input: {"q": "x"}'
    body = (await execute(tmp_path, [wrong, FINISH]))[0].json()
    step = body["steps"][0]
    assert step["status"] == "error" and step["action"] == "google"
    assert "'google' is not a tool" in step["observation"] and "calculator" in step["observation"]
    assert body["success"] is True


async def test_invalid_arguments_are_fed_back(tmp_path):
    wrong = 'Thought: t\nAction: calculator\nAction Input: {"expression": "2**10", "precision": 3}'
    reply, backend = await execute(tmp_path, [wrong, CALC, FINISH])
    steps = reply.json()["steps"]
    assert steps[0]["status"] == "error" and "precision" in steps[0]["observation"]
    assert "Parameters of calculator: expression (string, required)" in steps[0]["observation"]
    assert steps[0]["observation"] in backend.prompts[1]
    assert steps[1]["observation"] == "Success: 1024"


async def test_tool_failure_is_an_error_observation(tmp_path):
    bad = 'Thought: t\nAction: calculator\nAction Input: {"expression": "2 +* 3"}'
    steps = (await execute(tmp_path, [bad, FINISH]))[0].json()["steps"]
    assert steps[0]["status"] == "error" and steps[0]["observation"].startswith("Error: cannot evaluate") \
        or steps[0]["observation"].startswith("Error: not a valid expression")


async def test_finish_without_answer_is_corrected(tmp_path):
    body = (await execute(tmp_path, ["Thought: t\nAction: finish\nAction Input: {}", FINISH]))[0].json()
    assert "finish needs an answer" in body["steps"][0]["observation"] and body["final_answer"] == "1024"


@pytest.mark.parametrize("text, action, action_input", [
    ('thought: x\naction: calculator\naction input: {"expression": "1+1"}', "calculator", {"expression": "1+1"}),
    ('**Thought:** x\n**Action:** calculator\n**Action Input:** {"expression": "1+1"}', "calculator",
     {"expression": "1+1"}),
    ('Thought: x\nAction: calculator\nAction Input:\n```json\n{"expression": "1+1"}\n```', "calculator",
     {"expression": "1+1"}),
    ("Thought: x\nAction: calculator\nAction Input: {'expression': '2**10'}", "calculator", {"expression": "2**10"}),
    ("Thought: x\nAction: finish\nAction Input: {'answer': 'yes', 'sure': True}", "finish",
     {"answer": "yes", "sure": True}),
    ('Thought: x\nAction: calculator\nAction Input: {"expression": "1+1"} I will now wait.', "calculator",
     {"expression": "1+1"}),
    ('Thought: x\nAction: calculator\nAction Input: "2**10"', "calculator", "2**10"),
    ("Thought: x\nAction: calculator\nAction Input: 2**10", "calculator", "2**10"),
    ("Thought: I know it.\nFinal Answer: 1024", "finish", {"answer": "1024"}),
    ('Thought: x\nAction: calculator("2**10")', "calculator", "2**10"),
    ('Thought: x\nAction: `Calculator`\nAction Input: {"expression": "1"}', "calculator", {"expression": "1"}),
    ('Thought: x\nAction: "calculator"\nAction Input: {"expression": "1"}', "calculator", {"expression": "1"}),
    ('Thought: x\nAction: calculator()\nAction Input: {"expression": "1"}', "calculator", {"expression": "1"}),
    ('Thought: x\nAction: Use the calculator tool\nAction Input: {"expression": "1"}', "calculator",
     {"expression": "1"}),
    ('Thought: x\nAction: calculator {"expression": "3*3"}', "calculator", {"expression": "3*3"}),
    ('Thought: x\nAction: FINISH\nAction Input: {"answer": 42}', "finish", {"answer": 42}),
    ('<tool_call>\n{"name": "calculator", "arguments": {"expression": "5*4"}}\n</tool_call>', "calculator",
     {"expression": "5*4"}),
    ('Thought: x\nAction: python_repl\nAction Input: {"code": "print(1)\nprint({2})"}', "python_repl",
     {"code": "print(1)\nprint({2})"}),
])
def test_tolerant_parsing(text, action, action_input):
    step = parse_step(text, SCHEMAS)
    assert (step.action, step.action_input) == (action, action_input)


def test_parsing_keeps_the_thought_and_the_part_it_used():
    step = parse_step('I should compute.\nAction: calculator\nAction Input: {"expression": "1"}\n'
                      'Observation: 1\nAction: finish', SCHEMAS)
    assert step.thought == "I should compute." and step.text.endswith('{"expression": "1"}')


def test_parse_input_never_evaluates_code():
    assert parse_input("{'a': __import__('os').getcwd()}") == "{'a': __import__('os').getcwd()}"


async def test_sloppy_replies_run_end_to_end(tmp_path):
    sloppy = ["**Thought:** compute\n**Action:** Calculator\n**Action Input:** ```json\n{'expression': '2**10'}\n```",
              'Action Input: {"input": "2**10"}\nAction: calculator',  # labels out of order: a format error
              'Action: calculator\nAction Input: {"input": "3**2"}', "Final Answer: 1024"]
    body = (await execute(tmp_path, sloppy))[0].json()
    assert [s["status"] for s in body["steps"]] == ["observing", "error", "observing", "completed"]
    assert body["steps"][2]["action_input"] == {"expression": "3**2"}  # a lone unknown key goes to the parameter


async def test_streaming_sends_each_step_then_done(tmp_path):
    backend = FakeBackend(replies=[CALC, FINISH], context_length=16384)
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        reply = await client.post(EXECUTE, json={"goal": "What is 2 to the power of 10?", "stream": True})
    assert reply.headers["content-type"].startswith("text/event-stream")
    events = [(block.split("\n")[0], json.loads(block.split("data: ", 1)[1]))
              for block in reply.text.strip().split("\n\n") if block.startswith("event:")]
    assert [name for name, _ in events] == ["event: step", "event: step", "event: done"]
    assert events[0][1]["observation"] == "Success: 1024" and events[1][1]["status"] == "completed"
    assert events[2][1]["final_answer"] == "1024" and len(events[2][1]["steps"]) == 2


async def test_plan_body(tmp_path):
    backend = FakeBackend("1. Use calculator to compute 2**10\n2. Provide final answer", context_length=4096)
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        reply = await client.post("/api/agents/plan", json={"goal": "What is 2**10?"})
    assert reply.json() == {"plan": "1. Use calculator to compute 2**10\n2. Provide final answer",
                            "goal": "What is 2**10?"}
    assert "- calculator: Evaluate" in backend.prompts[0] and "numbered steps" in backend.prompts[0]


async def test_info_body(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        body = (await client.get("/api/agents/info")).json()
    assert body == {"agents": [{
        "type": "react", "name": "ReAct Agent",
        "description": "Agent that uses reasoning and acting to solve problems with tools",
        "capabilities": ["Multi-step reasoning", "Tool usage", "Self-correction", "Goal-oriented problem solving"],
    }]}


async def test_disabled_agents_are_404(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend(), enable_agents=False)) as client:
        replies = [await client.get("/api/agents/info"), await client.post("/api/agents/plan", json={"goal": "x"}),
                   await client.post(EXECUTE, json={"goal": "x"})]
    for reply in replies:
        assert reply.status_code == 404 and "ENABLE_AGENTS" in reply.json()["detail"]


@pytest.mark.parametrize("body, status", [
    ({"goal": "x", "model": "no-such-model"}, 404),
    ({"goal": "x", "model": "no-such-model", "stream": True}, 404),
    ({"goal": "   "}, 400), ({}, 400), ({"goal": "x", "max_iterations": 0}, 400),
])
async def test_refused_runs_use_the_detail_shape(tmp_path, body, status):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        reply = await client.post(EXECUTE, json=body)
        plan = await client.post("/api/agents/plan", json={"goal": ""})
    assert reply.status_code == status and set(reply.json()) == {"detail"}
    assert plan.status_code == 400 and "goal" in plan.json()["detail"]


async def test_client_disconnect_stops_the_run(tmp_path):
    from qwend.app import create_app

    backend = FakeBackend(replies=[CALC], delay=0.02, context_length=16384)
    runtime = fake_runtime(tmp_path, backend)
    app = create_app(runtime.settings, runtime)
    app.state.runtime = runtime
    body = json.dumps({"goal": "What is 2 to the power of 10?", "stream": True}).encode()
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    gone = asyncio.Event()

    async def receive():
        if inbox:
            return inbox.pop(0)
        await gone.wait()
        while not backend.active:  # (its prompt is prepared in a worker thread first)
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message):
        if b"event: step" in message.get("body", b""):
            gone.set()  # the client leaves after the first step, while the second is being generated

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": EXECUTE, "raw_path": EXECUTE.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"host", b"localhost")],
             "client": ("127.0.0.1", 1), "server": ("test", 80)}
    await asyncio.wait_for(app(scope, receive, send), 10)
    assert len(backend.prompts) == 2 and backend.stopped_early == 1 and backend.active == 0


def test_braces_later_in_a_bare_input_stay_text():
    step = parse_step("Thought: x\nAction: python_repl\nAction Input: print({1: 2})", SCHEMAS)
    assert step.action_input == "print({1: 2})"


async def test_a_repeated_call_is_not_run_again(tmp_path):
    body = (await execute(tmp_path, [CALC, CALC, FINISH]))[0].json()
    second = body["steps"][1]
    assert second["status"] == "error" and "already ran calculator with this exact input" in second["observation"]
    assert "Success: 1024" in second["observation"] and body["success"] is True
    # asking again for a result it has ends the run with that result as the answer
    assert len(body["steps"]) == 3 and body["steps"][2]["action"] == "finish" and body["final_answer"] == "1024"


async def test_a_repeated_failing_call_changes_course_then_ends_with_an_answer(tmp_path):
    failing = CALC.replace("2**10", "sum(1, 2")
    body, backend = await execute(tmp_path, [failing, failing, failing, "2 to the power of 10 is 1024."])
    body = body.json()
    # the step after the first refused repeat is sampled freely, to change the input
    assert [p.temperature for p in backend.sampled[:3]] == [0.2, 0.2, 0.9]
    assert [s["status"] for s in body["steps"]] == ["error", "error", "error", "completed"]
    assert "already ran calculator with this exact input" in body["steps"][2]["observation"]
    # the second ends the run with an answer asked for without tools
    assert body["success"] is True and body["final_answer"] == "2 to the power of 10 is 1024."
    assert "The tools cannot help further" in backend.prompts[-1] and "Action:" not in backend.prompts[-1]


def test_an_input_object_that_is_not_json_gives_its_value():
    from qwend.agents.react import tool_arguments

    code = 'def f(n): return "x" if n else 1\nprint(f(3))'
    assert tool_arguments(parse_input('{"code": "' + code + '"}'), SCHEMAS["python_repl"]) == {"code": code}
    assert tool_arguments(parse_input('{"code": "print(1)'), SCHEMAS["python_repl"]) == {"code": "print(1)"}
    assert tool_arguments(parse_input("print({1: 2})"), SCHEMAS["python_repl"]) == {"code": "print({1: 2})"}


async def test_non_text_results_are_json_and_long_ones_truncated(tmp_path):
    from qwend.agents.react_prompt import MAX_OBSERVATION_CHARS, observation_text
    from qwend.tools.base import ToolResult

    clock = 'Thought: t\nAction: get_current_datetime\nAction Input: {}'
    step = (await execute(tmp_path, [clock, FINISH]))[0].json()["steps"][0]
    assert step["observation"].startswith('Success: {"datetime": ') and step["status"] == "observing"
    long = observation_text(ToolResult(True, result="x" * 5000))
    assert long.startswith("Success: xxx") and long.endswith("[truncated, 5009 characters in all]")
    assert len(long) < MAX_OBSERVATION_CHARS + 50


async def test_disabled_tools_are_not_offered(tmp_path):
    backend = FakeBackend(replies=[CALC, FINISH], context_length=16384)
    runtime = fake_runtime(tmp_path, backend)
    runtime.tools.set_enabled("calculator", False)
    async with client_for(runtime) as client:
        body = (await client.post(EXECUTE, json={"goal": "2**10?"})).json()
    assert "- calculator:" not in backend.prompts[0] and "What is 3 factorial?" not in backend.prompts[0]
    assert "'calculator' is not a tool" in body["steps"][0]["observation"]


async def test_agent_steps_queue_as_the_requester(tmp_path):
    backend = FakeBackend(replies=["1. Provide final answer", CALC, FINISH], context_length=16384)
    runtime = fake_runtime(tmp_path, backend)
    scheduler, seen = runtime.models.loaded["fake.gguf"].scheduler, []
    run_work = scheduler.run_work

    def spy(*args, client=None, priority="interactive"):
        seen.append((client, priority))
        return run_work(*args, client=client, priority=priority)

    scheduler.run_work = spy
    headers = {"X-Qwend-Client": "bob", "X-Qwend-Priority": "batch"}
    async with client_for(runtime) as client:
        assert (await client.post("/api/agents/plan", json={"goal": "2**10?"}, headers=headers)).status_code == 200
        body = (await client.post(EXECUTE, json={"goal": "2**10?"}, headers=headers)).json()
    assert body["success"] is True and seen == [("bob", "batch")] * 3
