"""The transformers backend (Hugging Face transformers on torch): model folders on CUDA, Apple's MPS or the CPU.

Our own token loop rather than `model.generate`: it checks the stop flag between tokens, keeps the KV cache of
the last sequence so a new prompt re-reads only what differs from it, and samples with a per-job generator.
Every forward pass runs on one thread the backend owns, so jobs never overlap on the model. Qwen2-VL and
Qwen2.5-VL folders load with a TransformersImages (transformers_vision.py): the same loop, with images.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qwend.engine.base import (
    MAX_DEFAULT_CONTEXT, Finished, Generated, ModelInfo, Piece, Prefill, Prompt, TemplatedPrompts, answer_limit,
    common_prefix,
)
from qwend.engine.hf import HuggingFaceTokens, end_of_turn_ids, model_folder, read_vocabulary
from qwend.engine.template import ChatTemplate
from qwend.engine.threads import stream_from_thread
from qwend.engine.transformers_vision import PromptImage, TransformersImages, VisionPrompt, image_cut
from qwend.errors import BackendError
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, OutputConstraint, SamplingParams, ToolSpec

log = logging.getLogger(__name__)

ENGINE = "transformers"
PREFILL_CHUNK = 512  # prompt tokens per forward pass: bounds attention memory, and a stop is seen between chunks


class TransformersBackend(HuggingFaceTokens, TemplatedPrompts):
    def __init__(self, model, tokenizer, path: Path, settings: Settings, device: str,
                 images: TransformersImages | None = None) -> None:
        if images is not None and images.chat_template:
            tokenizer.chat_template = images.chat_template
        self.model = model
        self.images = images  # a Qwen-VL folder's: it reads Message.images
        self.tokenizer = tokenizer
        self.device = device
        self._threads = settings.threads if device == "cpu" else None
        # one worker thread: forward passes never overlap, and torch's thread count is set where they run
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwend-transformers",
                                            initializer=self._set_threads)
        self.template = ChatTemplate(tokenizer.chat_template, bos_token=tokenizer.bos_token or "",
                                     eos_token=tokenizer.eos_token or "")
        self.controls, longest_token = read_vocabulary(tokenizer)
        generation = getattr(model, "generation_config", None)
        self._end_ids = end_of_turn_ids(tokenizer, (tokenizer.eos_token_id, getattr(generation, "eos_token_id", None),
                                                    getattr(model.config.get_text_config(), "eos_token_id", None)))
        config = model.config.get_text_config()
        trained = int(getattr(config, "max_position_embeddings", None) or MAX_DEFAULT_CONTEXT)
        self.info = ModelInfo(
            context_length=min(trained, settings.context_length or MAX_DEFAULT_CONTEXT),
            trained_context_length=trained,
            vocab_size=int(getattr(config, "vocab_size", None) or len(tokenizer)),
            parameters=model.num_parameters(),
            file_size=sum(p.stat().st_size for p in path.glob("*.safetensors")),
            chat_template=tokenizer.chat_template is not None,
            grammar=False,
            vision=images is not None,
            engine=ENGINE,
            longest_token=longest_token,
            thinking=self.template.thinks,
        )
        # the sequence whose keys and values `_cache` holds, token for token, and the pictures in it
        self._cache = None
        self._cached_ids: list[int] = []
        self._cached_spans = ()
        self._sequence = None  # a vision model's prompt being generated from (worker thread only)

    @classmethod
    def load(cls, model: LocalModel, settings: Settings) -> TransformersBackend:
        """Load a Hugging Face model folder (blocking: call it from a worker thread)."""
        path = model_folder(model, ENGINE)
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError(f"the transformers backend needs torch and transformers: {exc}") from exc
        if settings.log_level != "debug":  # its per-load progress bars would fill the daemon's log
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        device = _device(settings.device)
        if device == "cpu" and settings.threads:
            torch.set_num_threads(settings.threads)
        options = _load_options(device, settings)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            # a vision folder (Qwen2-VL, Qwen2.5-VL) loads with its image processor; see transformers_vision.py
            vision = TransformersImages.load(path, options)
            hf_model, images = vision or (AutoModelForCausalLM.from_pretrained(path, local_files_only=True,
                                                                               **options), None)
        except (OSError, ValueError, ImportError, KeyError) as exc:
            raise BackendError(f"transformers could not load {path.name}: {exc}") from exc
        if "device_map" not in options:  # CPU and MPS: loaded on the CPU, then moved
            hf_model.to(device)
        hf_model.eval()
        return cls(hf_model, tokenizer, path, settings, device, images)

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> Prompt:
        if self.images is not None and any(m.images for m in messages):
            return self.images.prompt(self, messages, tools, thinking=thinking)
        return super().prompt(messages, tools, thinking=thinking)

    def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        # no grammar here: the constraint is a hint this engine cannot enforce (the parser reads calls)
        images = prompt.images if isinstance(prompt, VisionPrompt) else ()
        produce = functools.partial(self._generate_blocking, list(prompt.tokens), params, images=images)
        return stream_from_thread(produce, ENGINE, self._executor)  # itself: closing it must reach the worker at once

    def _generate_blocking(self, prompt: list[int], params: SamplingParams, stop: threading.Event,
                           images: Sequence[PromptImage] = ()) -> Iterator[Generated]:
        if self.images is not None:
            # set here, on the worker thread, for _reusable, _reuse and _inputs to read
            self._sequence = self.images.sequence(self.model, prompt, images)
        try:
            yield from self._generate_tokens(prompt, params, stop)
        finally:
            self._sequence = None  # the pictures' features are large; the spans stay for reuse

    def _generate_tokens(self, prompt: list[int], params: SamplingParams, stop: threading.Event
                         ) -> Iterator[Generated]:
        import torch

        if not prompt:
            raise BackendError("the prompt is empty")
        cached = self._reuse(prompt)
        yield Prefill(cached)
        limit = answer_limit(len(prompt), params, self.info.context_length)
        if limit <= 0:
            yield Finished("length")
            return
        sampler = _Sampler(params, prompt, self.device)
        text = _Detokenizer(self.tokenizer)
        pending, count, reason = prompt[cached:], 0, "length"
        with torch.inference_mode():
            while True:
                for start in range(0, len(pending), PREFILL_CHUNK):
                    if stop.is_set():
                        break
                    logits = self._forward(pending[start:start + PREFILL_CHUNK])
                if stop.is_set():
                    reason = "cancelled"
                    break
                token = sampler.next(logits)
                if token in self._end_ids:  # the end of the turn: its text never reaches the answer
                    reason = "stop"
                    break
                count += 1
                yield Piece(text.add(token))
                if count >= limit:
                    break
                pending = [token]
        if tail := text.flush():
            yield Piece(tail, tokens=0)
        yield Finished(reason)

    def _reuse(self, prompt: list[int]) -> int:
        """Crop the cache to what it shares with `prompt` (at least one token is left to evaluate, for the
        next token's logits); returns how many prompt tokens it still holds."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cached = min(self._reusable(prompt), len(prompt) - 1)
        # those within the kept prefix are the same pictures
        self._cached_spans = self._sequence.spans if self._sequence is not None else ()
        cache = self._cache
        # only plain full-attention layers hold every position, so only they can be cropped to a prefix
        if cached and cache is not None and all(type(layer) is DynamicLayer for layer in cache.layers):
            if surplus := cache.get_seq_length() - cached:
                cache.crop(-surplus)  # transformers 5: a negative count of tokens to remove
            self._cached_ids = self._cached_ids[:cached]
            return cached
        self._cache, self._cached_ids = DynamicCache(config=self.model.config), []
        return 0

    def _reusable(self, prompt: list[int]) -> int:
        """How many leading tokens of the cached sequence `prompt` could keep (on a vision model, up to the first
        picture behind image placeholders that differs)."""
        shared = common_prefix(self._cached_ids, prompt)
        return shared if self._sequence is None else image_cut(self._cached_spans, self._sequence.spans, shared)

    def _forward(self, ids: list[int]):
        """Feed `ids` after the cached sequence; the next token's logits (float32, on the model's device)."""
        held, self._cached_ids = self._cached_ids, []  # a failure midway leaves the cache's contents unknown
        output = self.model(**self._inputs(ids, len(held)), past_key_values=self._cache, use_cache=True,
                            logits_to_keep=1)
        held.extend(ids)
        self._cached_ids = held
        return output.logits[0, -1].float()

    def _inputs(self, ids: list[int], start: int) -> dict:
        """The model's inputs for `ids`, which sit at `start` in the sequence (a vision model's: embeddings with
        the images' features in them, and 3D positions)."""
        import torch

        if self._sequence is not None:
            return self._sequence.inputs(ids, start)
        return {"input_ids": torch.tensor([ids], device=self.model.device)}

    def _set_threads(self) -> None:
        # torch's intra-op thread count is per thread under OpenMP, so set it where the forwards run too
        if self._threads:
            import torch

            torch.set_num_threads(self._threads)

    def close(self) -> None:
        def release() -> None:
            import torch

            self.model = self._cache = None
            self._cached_ids = []
            if self.device == "cuda":
                torch.cuda.empty_cache()

        try:
            self._executor.submit(release).result()
        except RuntimeError:  # closed already
            pass
        self._executor.shutdown(wait=True)


class _Sampler:
    """The next token from logits: penalties, then greedy (temperature 0) or seeded sampling after
    temperature, top-k, top-p and min-p, in transformers' own order (temperature keeps the top k)."""

    def __init__(self, params: SamplingParams, prompt: list[int], device: str) -> None:
        import torch
        from transformers import (
            MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper,
        )

        self.params = params
        self.greedy = params.temperature <= 0
        self.repetition = (RepetitionPenaltyLogitsProcessor(params.repeat_penalty)
                           if params.repeat_penalty != 1.0 else None)
        # the repetition penalty sees the prompt and the answer, as in transformers' generate
        self.ids = torch.tensor([prompt], device=device) if self.repetition else None
        self.counts = None  # per token id: how often the answer has used it (presence/frequency penalties)
        self.top_k = params.top_k if params.top_k > 0 else None
        self.warpers = []
        if not self.greedy:
            if params.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if 0.0 < params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
            if params.min_p > 0.0:
                self.warpers.append(MinPLogitsWarper(min(params.min_p, 1.0)))
        self.generator = torch.Generator(device=device)
        if params.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(params.seed % 2**64)

    def next(self, logits) -> int:
        import torch

        scores = logits.unsqueeze(0)
        if self.repetition is not None:
            scores = self.repetition(self.ids, scores)
        if self.counts is not None:
            # OpenAI semantics: presence once per token id the answer has used, frequency per use
            scores = scores - self.params.frequency_penalty * self.counts
            scores = scores - self.params.presence_penalty * (self.counts > 0)
        if self.greedy:
            token = int(scores.argmax(dim=-1))
        else:
            # top-k as a gather, not TopKLogitsWarper's mask: the other warpers then sort k candidates rather
            # than the whole vocabulary (~125 ms a token on this CPU), with the same result
            candidates = None
            if self.top_k is not None and self.top_k < scores.shape[-1]:
                scores, candidates = scores.topk(self.top_k, dim=-1)
            for warper in self.warpers:
                scores = warper(None, scores)
            choice = torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=self.generator)
            token = int(candidates[0, choice] if candidates is not None else choice)
        self._remember(token, logits)
        return token

    def _remember(self, token: int, logits) -> None:
        import torch

        if self.repetition is not None:
            self.ids = torch.cat([self.ids, self.ids.new_tensor([[token]])], dim=1)
        if self.params.presence_penalty or self.params.frequency_penalty:
            if self.counts is None:
                self.counts = torch.zeros_like(logits).unsqueeze(0)
            self.counts[0, token] += 1


class _Detokenizer:
    """Text of each new token, never splitting a multi-byte character: a token that ends mid-character gives
    "" and its bytes come out with the token that completes them. Decodes only a short window (the tokens
    since the last complete piece, after the piece before them for context), not the whole answer."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0  # the window starts here: context for tokenizers that change a token's leading space
        self.read = 0  # everything before this has been emitted

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        """What an unfinished character left behind at the end (as replacement characters)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]


def _device(wanted: str) -> str:
    import torch

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if wanted == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (wanted == "cuda" and not cuda) or (wanted == "mps" and not mps):
        raise BackendError(f"device {wanted!r} was asked for, but this torch build cannot reach one")
    return wanted


def _load_options(device: str, settings: Settings) -> dict:
    """from_pretrained's dtype, attention and quantization for `device`."""
    import torch

    attention = settings.attn_implementation
    if attention == "flash_attention_2" and device != "cuda":
        log.warning("flash_attention_2 needs CUDA; using sdpa on %s", device)
        attention = "sdpa"
    options: dict = {"attn_implementation": attention}
    if device == "cpu":
        options["dtype"] = torch.float32  # measured faster than bfloat16 on CPUs without bf16 units
    elif device == "mps":
        options["dtype"] = torch.float16
    elif settings.load_in_4bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise BackendError("load_in_4bit needs bitsandbytes: pip install 'qwend[cuda]' (or set "
                               "QWEND_LOAD_IN_4BIT=false)") from exc
        from transformers import BitsAndBytesConfig

        compute = getattr(torch, settings.bnb_compute_dtype)
        options.update(dtype=compute, device_map="auto", quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        ))
    else:
        options.update(dtype=torch.bfloat16, device_map=device)
    return options

