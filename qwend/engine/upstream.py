"""The upstream backend: any OpenAI-compatible server (vLLM, SGLang, LM Studio, Ollama, llama-server) does the
generating; qwend keeps its own protocols, tools, sessions and scheduling in front of it.

The server renders its own chat template, so the prompt is the messages themselves. Its answer comes back
as the text a Qwen model would have written: tool calls it parsed are re-encoded as `<tool_call>` blocks and
reasoning as `<think>`, so the one output parser turns every engine's answer into the same events (and
calls a server left unparsed in its text are still found).
"""

from __future__ import annotations

import base64
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from qwend.engine.base import Embedded, Finished, Generated, ModelInfo, Piece, Prefill, Prompt
from qwend.engine.template import to_openai_tool
from qwend.errors import UpstreamError
from qwend.models.store import LocalModel
from qwend.models.upstream import UpstreamModels, connection_failed, upstream_failed, upstream_headers
from qwend.settings import Settings
from qwend.types import FinishReason, Message, OutputConstraint, SamplingParams, ToolSpec

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 32768  # when the server does not say
CHARS_PER_TOKEN = 3.5  # a cautious estimate for fitting history: the server's tokenizer is not ours
TOOL_CHOICE = {"none": "none", "optional": "auto", "required": "required"}
# the conversation a request continues (Prompt.affinity), for a balancer in front of the server's replicas: the
# same header clients give qwend (api/affinity.py), so one balancer rule serves both tiers
AFFINITY_HEADER = "X-Qwend-Affinity"


class UpstreamBackend:
    def __init__(self, name: str, models: UpstreamModels, settings: Settings, context_length: int) -> None:
        self.name = name
        self.models = models
        self.url = models.url
        self.info = ModelInfo(
            context_length=context_length, trained_context_length=context_length, vocab_size=0, parameters=0,
            file_size=0, chat_template=True, grammar=False, vision=True, engine="upstream",
            parallel=settings.upstream_parallel, embeddings=True,  # the server says, per model, whether it can
        )
        self._headers = upstream_headers(settings)
        self._timeout = httpx.Timeout(settings.upstream_timeout, connect=5.0)

    @classmethod
    def load(cls, model: LocalModel, settings: Settings) -> UpstreamBackend:
        """Check the server serves `model` and ask it to load it (blocking: call it from a worker thread)."""
        models = UpstreamModels(settings)
        entry = models.entry(model.name)
        models.load(model.name)
        return cls(model.name, models, settings, settings.context_length or _context_length(entry))

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> Prompt:
        chars = sum(len(m.content) + sum(len(c.arguments) for c in m.tool_calls) for m in messages)
        chars += sum(len(json.dumps(to_openai_tool(t))) for t in tools)
        return Prompt(messages=tuple(messages), tools=tuple(tools), thinking=thinking,
                      estimated_tokens=math.ceil(chars / CHARS_PER_TOKEN) + 4 * len(messages))

    def text_prompt(self, text: str, suffix: str | None = None) -> Prompt:
        """A text completion goes to the server's `/completions`, which fills in the middle itself (or refuses)."""
        chars = len(text) + len(suffix or "")
        return Prompt(text=text, suffix=suffix, estimated_tokens=math.ceil(chars / CHARS_PER_TOKEN))

    async def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        body = self._body(prompt, params, constraint)
        completion = not prompt.messages  # a text completion (text_prompt)
        endpoint = f"{self.url}/completions" if completion else f"{self.url}/chat/completions"
        yield Prefill(0)
        text = _AnswerText()
        usage: dict[str, Any] = {}
        reason: FinishReason = "stop"
        try:
            async with (
                httpx.AsyncClient(headers=self._headers, timeout=self._timeout) as client,
                client.stream("POST", endpoint, json=body,
                              headers={AFFINITY_HEADER: prompt.affinity} if prompt.affinity else None) as reply,
            ):
                if reply.status_code != 200:
                    await reply.aread()
                    raise upstream_failed(self.url, reply)
                async for line in reply.aiter_lines():
                    if not line.startswith("data:") or (data := line[5:].strip()) == "[DONE]":
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise UpstreamError(f"the upstream server failed: {chunk['error']}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        delta = {"content": choice.get("text")} if completion else choice.get("delta") or {}
                        for piece in text.feed(delta):
                            yield Piece(piece)
                        if choice.get("finish_reason") == "length":
                            reason = "length"
        except httpx.HTTPError as exc:
            raise connection_failed(self.url, exc) from None
        except json.JSONDecodeError as exc:
            raise UpstreamError(f"the upstream server sent a stream that is not JSON: {exc}") from None
        if tail := text.close():
            yield Piece(tail, tokens=0)
        yield Finished(reason, usage.get("prompt_tokens"), usage.get("completion_tokens"))

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """The server's `/embeddings`, made unit length as every engine's are (its refusal passes on)."""
        body = {"model": self.name, "input": list(texts), "encoding_format": "float"}
        try:
            async with httpx.AsyncClient(headers=self._headers, timeout=self._timeout) as client:
                reply = await client.post(f"{self.url}/embeddings", json=body)
        except httpx.HTTPError as exc:
            raise connection_failed(self.url, exc) from None
        if reply.status_code != 200:
            raise upstream_failed(self.url, reply)
        try:
            answer = reply.json()
            rows = sorted(answer["data"], key=lambda row: row["index"])
            vectors = [_unit([float(x) for x in row["embedding"]]) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"the upstream server sent embeddings qwend cannot read: {exc}") from None
        if len(vectors) != len(texts):
            raise UpstreamError(f"the upstream server sent {len(vectors)} embeddings for {len(texts)} inputs")
        return Embedded(vectors, int((answer.get("usage") or {}).get("prompt_tokens") or 0))

    def _body(self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [_to_openai_message(m) for m in prompt.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,  # not OpenAI's, but every local server reads these
            "min_p": params.min_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if not prompt.messages:
            del body["messages"]
            body["prompt"] = prompt.text
            if prompt.suffix is not None:
                body["suffix"] = prompt.suffix
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = body["repetition_penalty"] = params.repeat_penalty  # llama.cpp's, vLLM's
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.seed is not None:
            body["seed"] = params.seed
        if prompt.thinking is not None:  # the template switch vLLM, SGLang and llama-server pass on
            body["chat_template_kwargs"] = {"enable_thinking": prompt.thinking}
        if prompt.tools:
            body["tools"] = [to_openai_tool(t) for t in prompt.tools]
            if constraint is not None and constraint.tools:
                body["tool_choice"] = TOOL_CHOICE[constraint.calls]
                body["parallel_tool_calls"] = constraint.parallel
        if constraint is not None and constraint.json_schema is not None:
            schema = constraint.json_schema
            body["response_format"] = (
                {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}} if schema
                else {"type": "json_object"}
            )
        return body

    def close(self) -> None:
        """Unload the model on the server where it has an API for that (best effort: it may be gone)."""
        try:
            self.models.unload(self.name)
        except UpstreamError as exc:
            log.warning("could not unload %s on the upstream server: %s", self.name, exc.message)
        finally:
            self.models.close()


class _AnswerText:
    """A streamed OpenAI delta as the text a Qwen model writes: reasoning in <think>, calls in <tool_call>."""

    def __init__(self) -> None:
        self.thinking = False
        self.call: int | None = None  # the index of the call whose arguments are streaming
        self.arguments = False  # whether any of its arguments came yet

    def feed(self, delta: dict[str, Any]) -> list[str]:
        out: list[str] = []
        if reasoning := delta.get("reasoning_content") or delta.get("reasoning"):
            if not self.thinking:
                self.thinking = True
                out.append("<think>\n")
            out.append(reasoning)
        if content := delta.get("content"):
            out += self._end_thinking()
            out.append(content)
        for call in delta.get("tool_calls") or ():
            out += self._end_thinking()
            function = call.get("function") or {}
            index = call.get("index", 0)
            if index != self.call:
                out += self._end_call()
                self.call = index
                out.append(f'<tool_call>\n{{"name": {json.dumps(function.get("name") or "")}, "arguments": ')
            if arguments := function.get("arguments"):
                self.arguments = True
                out.append(arguments if isinstance(arguments, str) else json.dumps(arguments))
        return out

    def close(self) -> str:
        return "".join(self._end_thinking() + self._end_call())

    def _end_thinking(self) -> list[str]:
        if not self.thinking:
            return []
        self.thinking = False
        return ["\n</think>\n\n"]

    def _end_call(self) -> list[str]:
        if self.call is None:
            return []
        empty = not self.arguments
        self.call, self.arguments = None, False
        return [("{}" if empty else "") + "}\n</tool_call>\n"]


def _to_openai_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        out["content"] = [{"type": "text", "text": message.content}] + [
            {"type": "image_url",
             "image_url": {"url": f"data:{i.mime_type};base64,{base64.b64encode(i.data).decode()}"}}
            for i in message.images
        ]
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else vector


def _context_length(entry: dict[str, Any]) -> int:
    """The window the server reports for a model: vLLM's max_model_len, llama-server's meta, LM Studio's."""
    meta = entry.get("meta") or {}
    for value in (entry.get("max_model_len"), meta.get("n_ctx"), meta.get("n_ctx_train"),
                  entry.get("max_context_length"), entry.get("context_length")):
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_CONTEXT
