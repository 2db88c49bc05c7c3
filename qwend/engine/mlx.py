"""The MLX backend (mlx-lm): Hugging Face model folders on Apple's MLX (the GPU on Macs, the CPU elsewhere).

MLX binds arrays and streams to the thread that made them, so the load and every generation run on one
thread the backend owns. The KV cache of the last sequence is kept, and a new prompt re-reads only what
differs from it (the next chat turn shares the whole earlier conversation).
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qwend.engine.base import (
    MAX_DEFAULT_CONTEXT, Finished, Generated, ModelInfo, Piece, Prefill, Prompt, TemplatedPrompts, answer_limit,
    common_prefix,
)
from qwend.engine.hf import HuggingFaceTokens, end_of_turn_ids, model_folder, read_vocabulary
from qwend.engine.template import ChatTemplate
from qwend.engine.threads import stream_from_thread
from qwend.errors import BackendError
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import OutputConstraint, SamplingParams

ENGINE = "mlx"
PENALTY_CONTEXT = 64  # tokens the repeat/presence/frequency penalties look back over (llama.cpp's default)


class MlxBackend(HuggingFaceTokens, TemplatedPrompts):
    def __init__(self, model, tokenizer, config: dict, path: Path, settings: Settings,
                 executor: ThreadPoolExecutor) -> None:
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.utils import get_total_parameters

        self.model = model
        self.tokenizer = tokenizer
        self.executor = executor
        template = tokenizer.chat_template or _read_template(path)
        self.template = ChatTemplate(template, bos_token=tokenizer.bos_token or "",
                                     eos_token=tokenizer.eos_token or "")
        self.controls, longest_token = read_vocabulary(tokenizer)
        generation = path / "generation_config.json"
        generation_eos = json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else None
        tokenizer.eos_token_ids = set(end_of_turn_ids(
            tokenizer, (*tokenizer.eos_token_ids, config.get("eos_token_id"), generation_eos)))
        trained = int(config.get("max_position_embeddings") or MAX_DEFAULT_CONTEXT)
        self.info = ModelInfo(
            context_length=min(trained, settings.context_length or MAX_DEFAULT_CONTEXT),
            trained_context_length=trained,
            vocab_size=int(config.get("vocab_size") or len(tokenizer)),
            parameters=get_total_parameters(model),
            file_size=sum(p.stat().st_size for p in path.glob("*.safetensors")),
            chat_template=template is not None,
            grammar=False,
            engine=ENGINE,
            longest_token=longest_token,
            thinking=self.template.thinks,
        )
        # the sequence whose keys and values `_cache` holds, token for token
        self._cache = make_prompt_cache(model)
        self._cached_ids: list[int] = []

    @classmethod
    def load(cls, model: LocalModel, settings: Settings) -> MlxBackend:
        """Load a Hugging Face model folder (blocking) on the thread that will run all of its generations."""
        path = model_folder(model, ENGINE)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwend-mlx")
        try:
            return executor.submit(cls._load_here, path, settings, executor).result()
        except BaseException:
            executor.submit(_release_thread)  # its own failure must not hide the load's
            executor.shutdown(wait=True)
            raise

    @classmethod
    def _load_here(cls, path: Path, settings: Settings, executor: ThreadPoolExecutor) -> MlxBackend:
        try:
            import mlx_lm
        except ImportError as exc:
            raise BackendError(f"the mlx backend needs mlx-lm (pip install mlx-lm): {exc}") from exc
        try:
            model, tokenizer, config = mlx_lm.load(str(path), return_config=True)
        except Exception as exc:  # missing or corrupt files, an architecture mlx-lm lacks: all a failed load
            raise BackendError(f"mlx could not load {path.name}: {exc}") from exc
        return cls(model, tokenizer, config, path, settings, executor)

    def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        # no grammar here: the constraint is a hint this engine cannot enforce (the parser reads calls)
        produce = functools.partial(self._generate_blocking, list(prompt.tokens), params)
        return stream_from_thread(produce, ENGINE, self.executor)  # itself: closing it must reach the worker at once

    def _generate_blocking(self, prompt: list[int], params: SamplingParams, stop: threading.Event
                           ) -> Iterator[Generated]:
        import mlx.core as mx
        from mlx_lm import stream_generate

        if not prompt:
            raise BackendError("the prompt is empty")
        cached = self._reuse(prompt)
        yield Prefill(cached)
        limit = answer_limit(len(prompt), params, self.info.context_length)
        if limit <= 0:
            yield Finished("length")
            return
        mx.random.seed(secrets.randbits(32) if params.seed is None else params.seed % 2**64)
        responses = stream_generate(
            self.model, self.tokenizer, prompt[cached:], max_tokens=limit, sampler=_sampler(params),
            logits_processors=_logits_processors(params), prompt_cache=self._cache,
        )
        ids = list(prompt)
        self._cached_ids = []  # until the loop ends cleanly, the cache's contents are unknown
        reason = "length"
        try:
            for response in responses:
                # mlx-lm feeds each token to the model before handing it out: the cache holds it already
                ids.append(response.token)
                if stop.is_set():
                    reason = "cancelled"
                    break
                if response.finish_reason == "stop":  # an end-of-turn token: its text never reaches us
                    reason = "stop"
                    if response.text:
                        yield Piece(response.text, tokens=0)
                    break
                yield Piece(response.text)
        finally:
            responses.close()
            mx.synchronize()  # let the step mlx-lm computed ahead finish: the model is idle when we return
        self._cached_ids = self._settle(ids)
        yield Finished(reason)

    def _reuse(self, prompt: list[int]) -> int:
        """Trim the cache to what it shares with `prompt` (at least one token is left to evaluate, for the
        next token's logits); returns how many prompt tokens it still holds."""
        from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

        if _held(self._cache) != len(self._cached_ids):  # a generation failed midway: start afresh
            self._cache, self._cached_ids = make_prompt_cache(self.model), []
        cached = min(common_prefix(self._cached_ids, prompt), len(prompt) - 1)
        surplus = len(self._cached_ids) - cached
        if surplus and trim_prompt_cache(self._cache, surplus) != surplus:
            self._cache, cached = make_prompt_cache(self.model), 0
        return cached

    def _settle(self, ids: list[int]) -> list[int]:
        """The token ids the cache holds after a generation, with the cache trimmed to them if it ran ahead."""
        from mlx_lm.models.cache import trim_prompt_cache

        held = _held(self._cache)
        if held is None:
            return []
        if held > len(ids):
            trim_prompt_cache(self._cache, held - len(ids))
        return ids[:held]

    def close(self) -> None:
        def release() -> None:
            self.model = self._cache = None
            self._cached_ids = []
            _release_thread()

        try:
            self.executor.submit(release).result()
        except RuntimeError:  # closed already
            pass
        self.executor.shutdown(wait=True)


def _sampler(params: SamplingParams):
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=params.top_k)


def _logits_processors(params: SamplingParams) -> list:
    from mlx_lm.sample_utils import make_logits_processors

    # note: mlx-lm shows the penalties only the tokens of this call (the uncached suffix and the answer)
    return make_logits_processors(
        repetition_penalty=None if params.repeat_penalty == 1.0 else params.repeat_penalty,
        repetition_context_size=PENALTY_CONTEXT,
        presence_penalty=params.presence_penalty or None,
        presence_context_size=PENALTY_CONTEXT,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=PENALTY_CONTEXT,
    )


def _release_thread() -> None:
    """Free what MLX holds for the calling thread. Its streams must go before the thread ends: left to the
    thread's exit they abort the process now and then ("terminate called without an active exception")."""
    import gc

    import mlx.core as mx

    gc.collect()  # the freed model's arrays go on this thread, while its streams still exist
    mx.synchronize()
    mx.clear_cache()
    mx.clear_streams()


def _held(cache: list) -> int | None:
    """How many tokens the cache holds (None when its layers do not say)."""
    return getattr(cache[0], "offset", None) if cache else None


def _read_template(path: Path) -> str | None:
    file = path / "chat_template.jinja"
    return file.read_text() if file.is_file() else None
