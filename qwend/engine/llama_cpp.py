"""The llama.cpp backend (llama-cpp-python): GGUF models on CPU or GPU.

Text models generate through one BatchDecoder (engine/llama_batch.py): several answers at once in one
context, each conversation's KV cells kept for its next turn. A model with a multimodal projector reads
images through the LlamaCppImages it holds (engine/llama_cpp_vision.py). Each answer is read by a worker
thread, under the grammar it was given (whether an answer is calls or text is the chat pipeline's decision:
chat/decide.py); it checks a stop flag between tokens so a closed stream frees its sequence at once.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qwend.engine import grammar
from qwend.engine.base import (
    MAX_DEFAULT_CONTEXT, Embedded, Finished, Generated, ModelInfo, Piece, Prefill, Prompt, TemplatedPrompts,
    answer_limit, past_window,
)
from qwend.engine.draft_model import DraftModel
from qwend.engine.kv_tiers import KvTiers, model_key
from qwend.engine.llama_batch import BatchDecoder
from qwend.engine.llama_cpp_vision import LlamaCppImages
from qwend.engine.llama_slots import recurrent
from qwend.engine.llama_embeddings import LlamaEmbedder
from qwend.engine.specials import ControlTexts
from qwend.engine.template import ChatTemplate
from qwend.engine.threads import stream_from_thread
from qwend.errors import BackendError, ContextOverflow, InvalidRequest
from qwend.models.mmproj import find_mmproj
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, OutputConstraint, PromptProgress, SamplingParams, Speculated, ToolSpec

TOKENIZER_CONTEXT = 256  # the Llama object's own context, when the batch decoder's serves instead


class LlamaCppBackend(TemplatedPrompts):
    def __init__(self, llama, path: Path, decoder: BatchDecoder | None = None,
                 embedder: LlamaEmbedder | None = None, images: LlamaCppImages | None = None) -> None:
        """Text models generate through `decoder`; a model that reads images through its projector, `images`."""
        import llama_cpp

        self._lib = llama_cpp
        self.llama = llama  # the model, its vocabulary and metadata (its own context: see load)
        self.decoder = decoder
        self.embedder = embedder
        self.images = images
        # one reader thread per answer running: the default executor (a few threads, shared) would queue some
        self._readers = ThreadPoolExecutor(decoder.parallel if decoder else 1, thread_name_prefix="llama.cpp answer")
        model = llama._model
        self._vocab = model.vocab
        self._bos_text = model.token_get_text(model.token_bos()) if model.token_bos() >= 0 else ""
        eos_text = model.token_get_text(model.token_eos()) if model.token_eos() >= 0 else ""
        self._add_bos = model.add_bos_token()
        template = llama.metadata.get("tokenizer.chat_template")
        self.template = ChatTemplate(template, bos_token=self._bos_text, eos_token=eos_text)
        self.controls, longest_token = self._read_vocabulary()
        self.info = ModelInfo(
            context_length=decoder.n_ctx if decoder else llama.n_ctx(),
            trained_context_length=model.n_ctx_train(),
            vocab_size=llama.n_vocab(),
            parameters=model.n_params(),
            file_size=path.stat().st_size + (images.mmproj.stat().st_size if images else 0),
            chat_template=template is not None,
            grammar=True,
            vision=images is not None,
            parallel=decoder.parallel if decoder else 1,
            pins_prompts=decoder is not None and decoder.saved is not None,
            embeddings=embedder is not None,
            logprobs=decoder is not None,
            fill_in_middle=self._fim_markers(),
            longest_token=longest_token,
            thinking=self.template.thinks,
        )

    @classmethod
    def load(cls, model: LocalModel, settings: Settings) -> LlamaCppBackend:
        """Load a GGUF file (blocking: call it from a worker thread). With a multimodal projector (the `mmproj`
        setting, else an mmproj*.gguf beside it) the model reads images; a projector that does not fit it
        (made for another model) leaves it serving text, with a warning: one setting applies to every model
        loaded, and models loaded on demand may have none."""
        import llama_cpp

        path = model.path
        if not path.is_file():
            raise BackendError(f"{model.name} is a model folder; llama.cpp loads .gguf files (serve folders with "
                               "--backend transformers or --backend mlx)")
        _quiet_llama_logs(settings)
        n_ctx = settings.context_length or min(_trained_context(path), MAX_DEFAULT_CONTEXT)
        threads = settings.threads or os.cpu_count() or 1
        mmproj = settings.mmproj.expanduser() if settings.mmproj else find_mmproj(path)
        if mmproj is not None and not mmproj.is_file():
            raise BackendError(f"no projector at {mmproj} (the mmproj setting)")
        if mmproj is not None:
            llama = _open_llama(path, settings, threads, n_ctx=n_ctx, n_batch=settings.batch_size)
            try:
                images = LlamaCppImages(llama, path, mmproj, settings)
            except BackendError as exc:
                logging.getLogger(__name__).warning("%s; serving %s without vision", exc, path.name)
                llama.close()
            else:
                return cls(llama, path, images=images)
        # the batch decoder's context holds the KV cache; the Llama's own one is left as small as it can be
        llama = _open_llama(path, settings, threads, n_ctx=TOKENIZER_CONTEXT, n_batch=TOKENIZER_CONTEXT)
        draft = _draft_model(model, llama._model, settings, threads, n_ctx) if model.draft else None
        try:
            saved = KvTiers(settings.saved_kv_dir, model_key(path, llama_cpp.__version__),
                            ram_bytes=settings.kv_ram_mb << 20, disk_bytes=settings.kv_disk_mb << 20,
                            whole_only=recurrent(llama_cpp, llama._model))
            decoder = BatchDecoder(llama._model, n_ctx=n_ctx, n_batch=settings.batch_size,
                                   parallel=settings.parallel, slots=settings.cached_sequences, threads=threads,
                                   reuse=settings.prompt_cache, saved=saved, draft_max=settings.draft_max,
                                   draft_model=draft)
        except BackendError:
            if draft is not None:
                draft.close()
            llama.close()
            raise
        embedder = LlamaEmbedder(functools.partial(_open_llama, path, settings, threads), name=model.name,
                                 trained_context=llama._model.n_ctx_train(), metadata=llama.metadata)
        return cls(llama, path, decoder, embedder)

    def _fim_markers(self) -> tuple[str, str, str] | None:
        lib, vocab = self._lib, self._vocab
        ids = (lib.llama_vocab_fim_pre(vocab), lib.llama_vocab_fim_suf(vocab), lib.llama_vocab_fim_mid(vocab))
        if min(ids) < 0:
            return None
        text = self.llama._model.token_get_text
        return text(ids[0]), text(ids[1]), text(ids[2])

    async def embed(self, texts: Sequence[str]) -> Embedded:
        # a text longer than the window could hold is refused before it is tokenized (a 30 MB one took 15 s)
        for index, text in enumerate(texts):
            if past_window(text, self.embedder.n_ctx, self.info.longest_token):
                raise ContextOverflow(f"input {index} is {len(text)} characters, more than the {self.embedder.n_ctx} "
                                      "tokens this model embeds at a time can hold", param="input")
        return await asyncio.to_thread(self.embedder.embed, texts)

    def grammar_for(self, constraint: OutputConstraint) -> str:
        """The GBNF that enforces `constraint`, parsed by llama.cpp here (a millisecond), before the job is
        queued: one its parser refuses is built again without the keywords the converter may get wrong, and
        past that the request is a 400, never a failed generation."""
        for loose in (False, True):
            rules = grammar.for_constraint(constraint, loose=loose, form=self.template.call_form)
            if not rules or self._parses(rules):
                return rules
        raise InvalidRequest("llama.cpp cannot parse the grammar this schema becomes; simplify its patterns and "
                             "formats", param="response_format" if constraint.json_schema is not None else "tools")

    def _parses(self, rules: str) -> bool:
        sampler = self._lib.llama_sampler_init_grammar(self._vocab, rules.encode(), b"root")
        if sampler:
            self._lib.llama_sampler_free(sampler)
        return bool(sampler)

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        """`text`'s ids, control tokens parsed when `special`; a BOS first if the model wants one and `bos`."""
        add_bos = bos and self._add_bos and not (self._bos_text and text.startswith(self._bos_text))
        return self.llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def _read_vocabulary(self) -> tuple[ControlTexts, int]:
        """The control tokens' texts, and how many bytes the longest token holds."""
        model, lib, vocab = self.llama._model, self._lib, self._vocab
        controls, longest, buffer = [], 0, ctypes.create_string_buffer(8)
        for token in range(model.n_vocab()):
            if lib.llama_vocab_get_attr(vocab, token) & lib.LLAMA_TOKEN_ATTR_CONTROL:
                controls.append(model.token_get_text(token))
            # the piece's length in bytes (negated when it is longer than the buffer), control tokens' included
            longest = max(longest, abs(lib.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, True)))
        return ControlTexts(controls), longest

    def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        # the whole Prompt goes to the worker: a vision prompt keeps its images alive until generated from
        produce = functools.partial(self._generate_blocking, prompt, params, constraint)
        # itself: closing it must reach the worker at once
        return stream_from_thread(produce, "llama.cpp", self._readers)

    def _generate_blocking(
        self, request: Prompt, params: SamplingParams, constraint: OutputConstraint | None, stop: threading.Event,
    ) -> Iterator[Generated]:
        llama = self.llama
        limit = answer_limit(request.length, params, self.info.context_length)
        if limit <= 0:
            yield Prefill(0)
            yield Finished("length")
            return
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        prompt = list(request.tokens)
        rules = constraint.grammar if constraint else ""
        # a grammar over the answer's first tokens only: past them the answer is generated on, unconstrained
        # (a grammar over all of it would cost ~35% speed), from the prompt and those tokens (cached)
        shaped = constraint.grammar_tokens if rules and constraint.grammar_tokens else None
        tokens = self._open(list(prompt), params, rules or None, pin=request.pin)
        count, reason, speculated = 0, "length", Speculated()
        try:
            yield Prefill(tokens.cached)
            while (token := next(tokens, None)) is not None:
                if isinstance(token, PromptProgress):
                    yield token
                    continue
                logprob = tokens.take_logprob()
                if stop.is_set():
                    reason = "cancelled"
                    break
                if self._lib.llama_vocab_is_eog(self._vocab, token):
                    reason = "stop"
                    break
                count += 1
                yield Piece(decoder.decode(llama.detokenize([token], special=False)), logprob=logprob)
                if count >= limit:
                    break
                if shaped is not None:
                    prompt.append(token)
                    if count == shaped:
                        tokens.close()
                        speculated += tokens.speculated
                        tokens, shaped = self._open(list(prompt), params, None), None
        finally:
            tokens.close()
        if tail := decoder.decode(b"", final=True):
            yield Piece(tail, tokens=0)
        yield Finished(reason, speculated=speculated + tokens.speculated)

    def _open(self, prompt: list[int], params: SamplingParams, rules: str | None, pin: bool = False):
        """The tokens sampled after `prompt` (under the GBNF `rules` when given); `.cached` says how many
        prompt tokens were already in the KV cache. `pin` keeps the prompt's KV state for good. A prompt with
        images is generated from by the image reader (engine/llama_cpp_vision.py)."""
        if self.images is not None:
            return self.images.open(prompt, params, rules)
        return self.decoder.open(prompt, params, rules, pin)

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> Prompt:
        if self.images is not None and any(m.images for m in messages):
            return self.images.prompt(self, messages, tools, thinking=thinking)
        return super().prompt(messages, tools, thinking=thinking)

    def close(self) -> None:
        self._readers.shutdown(wait=True)
        if self.embedder:
            self.embedder.close()
        if self.decoder:
            self.decoder.close()
        if self.images:
            self.images.close()
        self.llama.close()


def _open_llama(path: Path, settings: Settings, threads: int, *, n_ctx: int, n_batch: int, **options):
    from llama_cpp import Llama

    try:
        llama = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads, n_threads_batch=threads,
                      n_gpu_layers=settings.gpu_layers, verbose=settings.log_level == "debug", **options)
    except (ValueError, RuntimeError) as exc:
        raise BackendError(f"llama.cpp could not load {path.name}: {exc}") from exc
    _quiet_llama_logs(settings)  # Llama() has just set the logger to show errors
    return llama


def _draft_model(model: LocalModel, target, settings: Settings, threads: int, n_ctx: int) -> DraftModel | None:
    """The model that drafts for `model` (its `draft`), or None, with a warning, when it cannot."""
    draft = model.draft
    try:
        llama = _open_llama(draft.path, settings, threads, n_ctx=TOKENIZER_CONTEXT, n_batch=TOKENIZER_CONTEXT)
    except BackendError as exc:
        logging.getLogger(__name__).warning("%s loads without a draft model: %s", model.name, exc.message)
        return None
    try:
        return DraftModel(llama, target, n_ctx=n_ctx, n_batch=settings.batch_size, threads=threads,
                          sequences=max(settings.cached_sequences, settings.parallel))
    except BackendError as exc:
        llama.close()
        logging.getLogger(__name__).warning("%s loads without %s drafting: %s", model.name, draft.name, exc.message)
        return None


def _quiet_llama_logs(settings: Settings) -> None:
    """llama.cpp's log lines go through this logger: they show only when debugging qwend. A full cache, which
    the batch decoder handles by evicting, is logged as an error too, and every failure that matters reaches
    qwend's own log as a BackendError."""
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if settings.log_level == "debug" else logging.CRITICAL)


def _trained_context(path: Path) -> int:
    """The model's trained context length from GGUF metadata, read without loading weights or a context."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise BackendError(f"llama.cpp could not read {path.name}: not a valid GGUF file")
    try:
        buffer = ctypes.create_string_buffer(128)

        def meta(key: str) -> str | None:
            found = llama_cpp.llama_model_meta_val_str(model, key.encode(), buffer, len(buffer))
            return buffer.value.decode() if found >= 0 else None

        value = meta(f"{meta('general.architecture')}.context_length")
        return int(value) if value else MAX_DEFAULT_CONTEXT
    finally:
        llama_cpp.llama_model_free(model)
