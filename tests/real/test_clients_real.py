"""The client libraries people point at local servers, each against the real daemon and the real default model,
on what broke them (issue 27): structured output through the Responses API (the OpenAI Agents SDK, the openai
SDK's `responses.parse`, pydantic-ai, LangChain), bodies sent without a JSON Content-Type (litellm's Ollama
provider), the routes they call (`models.retrieve`, Anthropic's count_tokens and models list, Ollama's older
embeddings route and raw / fill-in-the-middle generation), empty embedding inputs, stop sequences and reasoning
fields. Each library is used as its documentation shows; nothing here speaks HTTP by hand except where a
client's own requests are reproduced byte for byte."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches a price list at import otherwise

import anthropic
import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from qwend.settings import DEFAULT_MODEL

pytestmark = pytest.mark.real_model


class Capital(BaseModel):
    country: str
    city: str


QUESTION = "What is the capital of France? Answer with the country and its capital city."


def _is_paris(answer: Capital) -> bool:
    return "paris" in answer.city.lower() and "france" in answer.country.lower()


@pytest.fixture(scope="module")
def sdk(daemon):
    return openai.OpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0, timeout=300)


def test_openai_responses_parse_gives_the_pydantic_object(sdk):
    reply = sdk.responses.parse(model=DEFAULT_MODEL, input=QUESTION, text_format=Capital, temperature=0)
    assert isinstance(reply.output_parsed, Capital) and _is_paris(reply.output_parsed)
    assert reply.text.format.type == "json_schema"
    [asked] = sdk.responses.input_items.list(reply.id).data
    assert asked.role == "user" and asked.content == QUESTION


def test_openai_models_retrieve(sdk):
    model = sdk.models.retrieve(DEFAULT_MODEL)
    assert model.id == DEFAULT_MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError, match="qwend pull"):
        sdk.models.retrieve("qwen9:7t")


def test_openai_chat_carries_reasoning_names_and_a_fingerprint(sdk):
    reply = sdk.chat.completions.create(model=DEFAULT_MODEL, temperature=0, max_tokens=4,
                                        messages=[{"role": "user", "content": "Say hi."}])
    assert reply.system_fingerprint and reply.system_fingerprint.startswith("fp_qwend")


def test_agents_sdk_structured_output_and_a_tool(daemon):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0, timeout=300)
    model = OpenAIResponsesModel(model=DEFAULT_MODEL, openai_client=client)
    settings = ModelSettings(temperature=0)
    agent = Agent(name="geo", instructions="Answer in JSON.", model=model, output_type=Capital, model_settings=settings)
    result = Runner.run_sync(agent, QUESTION)
    assert isinstance(result.final_output, Capital) and _is_paris(result.final_output)

    @function_tool
    def population(city: str) -> str:
        """The number of people living in a city."""
        return f"{city} has 2,102,650 inhabitants."

    counted = Agent(name="census", model=model, tools=[population], model_settings=settings,
                    instructions="Use the population tool, then answer.")
    answer = Runner.run_sync(counted, "How many people live in Paris?", max_turns=4)
    assert "2,102,650" in answer.final_output or "2102650" in answer.final_output.replace(",", "")


async def test_agents_sdk_streamed_run(daemon):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{daemon}/v1", api_key="unused", max_retries=0, timeout=300)
    agent = Agent(name="geo", instructions="Answer in JSON.", output_type=Capital,
                  model=OpenAIResponsesModel(model=DEFAULT_MODEL, openai_client=client),
                  model_settings=ModelSettings(temperature=0))
    run = Runner.run_streamed(agent, QUESTION)
    kinds = {event.type async for event in run.stream_events()}
    assert "raw_response_event" in kinds and _is_paris(run.final_output)


def test_pydantic_ai_native_output_on_the_responses_model(daemon):
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIResponsesModel(DEFAULT_MODEL, provider=OpenAIProvider(base_url=f"{daemon}/v1", api_key="unused"))
    agent = Agent(model, output_type=NativeOutput(Capital), model_settings={"temperature": 0})
    assert _is_paris(agent.run_sync(QUESTION).output)


def test_langchain_responses_structured_output_and_embeddings(daemon, sdk):
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    chat = ChatOpenAI(model=DEFAULT_MODEL, base_url=f"{daemon}/v1", api_key="unused", temperature=0,
                      use_responses_api=True)
    assert _is_paris(chat.with_structured_output(Capital, method="json_schema").invoke(QUESTION))
    # LangChain sends tiktoken ids unless told to send text; told, it embeds
    embeddings = OpenAIEmbeddings(model=DEFAULT_MODEL, base_url=f"{daemon}/v1", api_key="unused",
                                  check_embedding_ctx_length=False)
    vectors = embeddings.embed_documents(["hello", "world"])
    assert len(vectors) == 2 and len(vectors[0]) > 100
    # what it sends untold (tiktoken's ids; tiktoken's files cannot be fetched here): the error says what to do
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        sdk.embeddings.create(model=DEFAULT_MODEL, input=[[15339, 1917]])


def test_langchain_ollama_chat_tools_structured_output_and_embeddings(daemon):
    from langchain_core.tools import tool
    from langchain_ollama import ChatOllama, OllamaEmbeddings

    chat = ChatOllama(model=DEFAULT_MODEL, base_url=daemon, temperature=0)
    assert "paris" in chat.invoke("What is the capital of France? One word.").content.lower()
    assert "".join(chunk.content for chunk in chat.stream("Say hi.")).strip()
    assert _is_paris(chat.with_structured_output(Capital).invoke(QUESTION))

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "18C"

    [called] = chat.bind_tools([get_weather]).invoke("What is the weather in Paris?").tool_calls
    assert called["name"] == "get_weather" and "paris" in called["args"]["city"].lower()
    embeddings = OllamaEmbeddings(model=DEFAULT_MODEL, base_url=daemon)
    assert len(embeddings.embed_documents(["a", "b"])) == 2 and len(embeddings.embed_query("hi")) > 100


def test_litellm_ollama_providers_send_no_json_content_type(daemon):
    import litellm

    reply = litellm.completion(model=f"ollama/{DEFAULT_MODEL}", api_base=daemon, temperature=0, max_tokens=8,
                               messages=[{"role": "user", "content": "What is the capital of France? One word."}])
    assert "paris" in reply.choices[0].message.content.lower()
    chat = litellm.completion(model=f"ollama_chat/{DEFAULT_MODEL}", api_base=daemon, temperature=0, max_tokens=8,
                              messages=[{"role": "user", "content": "What is the capital of France? One word."}])
    assert "paris" in chat.choices[0].message.content.lower()
    vectors = litellm.embedding(model=f"ollama/{DEFAULT_MODEL}", api_base=daemon, input=["hello", "world"])
    assert len(vectors.data) == 2


def test_curl_d_as_ollama_documents_it_and_a_page_still_refused(daemon):
    body = '{"model": "%s", "prompt": "Say hi.", "stream": false, "options": {"num_predict": 4}}' % DEFAULT_MODEL
    # curl -d: application/x-www-form-urlencoded, no Origin
    reply = httpx.post(f"{daemon}/api/generate", content=body, timeout=120,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert reply.status_code == 200 and reply.json()["done"] is True
    page = httpx.post(f"{daemon}/api/generate", content=body, timeout=120,
                      headers={"content-type": "text/plain", "origin": "http://localhost:8080"})
    assert page.status_code == 415


def test_ollama_client_older_routes_raw_and_fill_in_the_middle(daemon):
    client = ollama.Client(host=daemon, timeout=300)
    assert httpx.head(daemon).status_code == 200 and httpx.get(f"{daemon}/api/version").json()["version"]
    assert len(client.embeddings(model=DEFAULT_MODEL, prompt="hello")["embedding"]) > 100
    with pytest.raises(ollama.ResponseError, match="empty string"):
        client.embed(model=DEFAULT_MODEL, input=["hello", ""])
    raw = client.generate(model=DEFAULT_MODEL, raw=True, options={"temperature": 0, "num_predict": 6},
                          prompt="<|im_start|>user\nWhat is 2+2? Answer with the number.<|im_end|>\n"
                                 "<|im_start|>assistant\n")
    assert "4" in raw["response"]
    filled = client.generate(model=DEFAULT_MODEL, prompt="def add(a, b):\n    return ", suffix="\n\nprint(add(1, 2))\n",
                             options={"temperature": 0, "num_predict": 12})
    assert "a + b" in filled["response"] or "a+b" in filled["response"]


def test_anthropic_count_tokens_models_and_stop_sequences(daemon):
    client = anthropic.Anthropic(base_url=daemon, api_key="unused", max_retries=0, timeout=300)
    weather = {"name": "get_weather", "description": "Current weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    plain = client.messages.count_tokens(model=DEFAULT_MODEL, messages=ask)
    with_tools = client.messages.count_tokens(model=DEFAULT_MODEL, messages=ask, tools=[weather])
    assert 5 < plain.input_tokens < with_tools.input_tokens
    answer = client.messages.create(model=DEFAULT_MODEL, max_tokens=40, messages=ask, extra_body={"temperature": 0})
    assert answer.usage.input_tokens + (answer.usage.cache_read_input_tokens or 0) == plain.input_tokens
    cut = client.messages.create(model=DEFAULT_MODEL, max_tokens=40, messages=ask, extra_body={"temperature": 0},
                                 stop_sequences=["Paris"])
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", "Paris") and "Paris" not in cut.content[0].text
    listed = client.models.list()
    assert DEFAULT_MODEL in [m.id for m in listed.data] and all(m.type == "model" for m in listed.data)
    assert client.models.retrieve(DEFAULT_MODEL).display_name == DEFAULT_MODEL
