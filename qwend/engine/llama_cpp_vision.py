"""Images on the llama.cpp backend: a GGUF model plus its multimodal projector (an mmproj GGUF), read through
libmtmd, as llama-server does. LlamaCppImages is the part a LlamaCppBackend holds when its model reads images.

An image in a prompt becomes a run of placeholder slots in the token list, one per position it takes (for
M-RoPE models such as Qwen2-VL fewer than its tokens: max(columns, rows)). A placeholder is negative, so it is
never a real token, and the same for the same picture, so prefix reuse works as for text: the next turn of a
conversation keeps the picture's KV state. Before llama.generate reads a prompt, the images not yet in the KV
cache are encoded by the projector and decoded at their positions (mtmd_helper_eval_chunk_single); generate
then finds them cached and evaluates only the text after them.
"""

from __future__ import annotations

import ctypes
import hashlib
import secrets
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from qwend.engine.base import Prompt, TemplatedPrompts, common_prefix
from qwend.engine.llama_sampler import RANDOM_SEED
from qwend.errors import BackendError, InvalidRequest
from qwend.types import Image, Message, SamplingParams, Speculated, ToolSpec

# Formats stb_image (inside libmtmd) decodes; WebP is not one of them
READABLE_TYPES = "JPEG, PNG, BMP, GIF, TGA, PSD, HDR, PIC or PNM"


@dataclass(frozen=True, eq=False)
class ImageChunk:
    """One picture as libmtmd prepared it (decoded and resized, not yet encoded), owned until garbage."""

    placeholder: int
    pointer: int  # an owned mtmd_input_chunk
    before: tuple[int, ...]  # the text tokens the model puts around an image (Qwen2-VL: <|vision_start|> ...)
    after: tuple[int, ...]
    positions: int  # slots it takes in the token list
    tokens: int  # KV cells it fills

    def __post_init__(self) -> None:
        from llama_cpp import mtmd_cpp

        weakref.finalize(self, mtmd_cpp.mtmd_input_chunk_free, self.pointer)


@dataclass(frozen=True)
class VisionPrompt(Prompt):
    """A prompt with images: `tokens` holds their placeholder slots; the prompt keeps the images alive until
    it has been generated from."""

    images: tuple[ImageChunk, ...] = ()

    @property
    def length(self) -> int:
        """KV cells the prompt fills: an M-RoPE image fills more cells than the slots it takes."""
        return len(self.tokens) + sum(i.tokens - i.positions for i in self.images)


class LlamaCppImages:
    """A loaded projector: it turns a prompt's pictures into placeholder runs, and generates from prompts that
    hold them in the Llama's own context. Raises BackendError when the projector does not fit the model."""

    def __init__(self, llama, model: Path, mmproj: Path, settings) -> None:
        from llama_cpp import mtmd_cpp
        from llama_cpp._logger import llama_log_callback

        self._mtmd = mtmd_cpp
        self.llama = llama
        # mtmd's and clip's log lines through llama-cpp-python's logger, shown only when debugging qwend
        mtmd_cpp.mtmd_log_set(llama_log_callback, ctypes.c_void_p(0))
        mtmd_cpp.mtmd_helper_log_set(llama_log_callback, ctypes.c_void_p(0))
        params = mtmd_cpp.mtmd_context_params_default()
        params.use_gpu = settings.gpu_layers != 0
        params.print_timings = False
        params.n_threads = llama.n_threads
        self._context = mtmd_cpp.mtmd_init_from_file(str(mmproj).encode(), llama._model.model, params)
        if not self._context:
            raise BackendError(f"llama.cpp could not load the projector {mmproj.name} for {model.name} (a projector "
                               "made for another model, or not an mmproj GGUF; run with --log-level debug to see why)")
        if not mtmd_cpp.mtmd_support_vision(self._context):
            mtmd_cpp.mtmd_free(self._context)
            raise BackendError(f"{mmproj.name} has no vision encoder (an audio-only projector)")
        self.mmproj = mmproj
        # where images go in the rendered template: a nonce, so no message text can pose as one
        self._marker = f"<|qwend-image-{secrets.token_hex(8)}|>"
        # images of prompts not yet generated from, by placeholder (each prompt holds its own alive)
        self._images: weakref.WeakValueDictionary[int, ImageChunk] = weakref.WeakValueDictionary()
        self._images_lock = threading.Lock()  # prompt() runs on the event loop, generation in a worker

    def prompt(
        self, templated: TemplatedPrompts, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
        thinking: bool | None = None,
    ) -> Prompt:
        """The prompt for a conversation with pictures, rendered by the backend `templated`."""
        pictures = [image for m in messages for image in m.images]
        # the template sees text: a marker for each image, before the message's text (as llama-server does)
        marked = [replace(m, images=(), content=self._marker * len(m.images) + m.content) if m.images else m
                  for m in messages]
        text = templated.render(marked, tools, thinking=thinking)
        pieces = text.split(self._marker)
        if len(pieces) != len(pictures) + 1:
            raise BackendError("the model's chat template dropped or repeated an image")
        tokens = templated.tokens(pieces[0])
        chunks = []
        for picture, piece in zip(pictures, pieces[1:]):
            chunk = self._image(picture)
            chunks.append(chunk)
            tokens += [*chunk.before, *[chunk.placeholder] * chunk.positions, *chunk.after]
            tokens += templated.tokens(piece, bos=False)
        shown = templated.controls.unmask(text).replace(self._marker, self._mtmd.mtmd_default_marker().decode())
        return VisionPrompt(tuple(tokens), shown, images=tuple(chunks))

    def _image(self, picture: Image) -> ImageChunk:
        """The picture prepared by libmtmd: the one a queued prompt already holds, or a new one."""
        digest = hashlib.sha256(picture.data).digest()
        placeholder = -1 - int.from_bytes(digest[:4], "little") % (2**31 - 1)  # within int32, never a token
        with self._images_lock:
            known = self._images.get(placeholder)
        if known is not None:
            return known
        chunk = self._prepare(picture, placeholder)
        with self._images_lock:
            return self._images.setdefault(placeholder, chunk)

    def _prepare(self, picture: Image, placeholder: int) -> ImageChunk:
        mtmd = self._mtmd
        data = (ctypes.c_uint8 * len(picture.data)).from_buffer_copy(picture.data)
        bitmap = mtmd.mtmd_helper_bitmap_init_from_buf(self._context, data, len(picture.data), False)
        if not bitmap:
            raise InvalidRequest(f"could not read an image ({picture.mime_type}); llama.cpp reads {READABLE_TYPES}",
                                 param="messages")
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            if mtmd.mtmd_bitmap_is_audio(bitmap):
                raise InvalidRequest("an image part holds audio, which this model does not read", param="messages")
            text = mtmd.mtmd_input_text()
            text.text = marker = mtmd.mtmd_default_marker()
            text.text_len, text.add_special, text.parse_special = len(marker), False, True
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            if mtmd.mtmd_tokenize(self._context, chunks, ctypes.byref(text), bitmaps, 1) != 0:
                raise InvalidRequest("llama.cpp could not prepare an image", param="messages")
            parts: list[list[int]] = [[], []]
            image = None
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    count = ctypes.c_size_t()
                    ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                    parts[image is not None].extend(ids[:count.value])
                else:
                    image = chunk
            if image is None:
                raise InvalidRequest("llama.cpp made nothing of an image", param="messages")
            return ImageChunk(placeholder, mtmd.mtmd_input_chunk_copy(image), tuple(parts[0]), tuple(parts[1]),
                              mtmd.mtmd_input_chunk_get_n_pos(image), mtmd.mtmd_input_chunk_get_n_tokens(image))
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)

    def open(self, prompt: list[int], params: SamplingParams, rules: str | None) -> _LlamaTokens:
        """The tokens sampled after `prompt`, as BatchDecoder.open. Images go through libmtmd, which evaluates
        into the Llama's own single-sequence context; so a model that reads images generates with
        llama.generate there rather than through the batch decoder."""
        from llama_cpp import LlamaGrammar

        llama = self.llama
        cached = self._cached_boundary(prompt, self._spans(prompt))
        cached = min(cached, len(prompt) - 1) if llama.n_tokens else 0  # llama.generate re-reads at least one
        self._evaluate_images(prompt)
        llama.set_seed(RANDOM_SEED if params.seed is None else params.seed)
        tokens = llama.generate(
            prompt, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p, temp=params.temperature,
            repeat_penalty=params.repeat_penalty, frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            grammar=LlamaGrammar.from_string(rules, verbose=False) if rules else None,
        )
        return _LlamaTokens(tokens, cached)

    def _spans(self, tokens: Sequence[int]) -> list[tuple[int, ImageChunk]]:
        """(start, image) for each run of image placeholders in `tokens`."""
        spans, i = [], 0
        while i < len(tokens):
            if tokens[i] >= 0:
                i += 1
                continue
            with self._images_lock:
                image = self._images.get(tokens[i])
            if image is None or tuple(tokens[i:i + image.positions]) != (image.placeholder,) * image.positions:
                raise BackendError("a prompt's image is no longer held (generate from the prompt object itself)")
            spans.append((i, image))
            i += image.positions
        return spans

    def _cached_boundary(self, tokens: Sequence[int], spans: list[tuple[int, ImageChunk]]) -> int:
        """How much of the KV cache `tokens` can keep: the common prefix, never ending inside an image."""
        keep = common_prefix(self.llama._input_ids, tokens)
        for start, image in spans:
            if start < keep < start + image.positions:
                return start
        return keep

    def _evaluate_images(self, tokens: Sequence[int]) -> None:
        """Put every image of `tokens` (and the text before the last one) into the KV cache, so that
        llama.generate, which evaluates tokens only, finds them all cached."""
        spans = self._spans(tokens)
        if not spans:
            return
        last_start, last = spans[-1]
        if last_start + last.positions >= len(tokens):
            raise BackendError("a prompt cannot end with an image")  # generate re-reads the last token
        llama, mtmd = self.llama, self._mtmd
        done = self._cached_boundary(tokens, spans)
        if done >= last_start + last.positions:
            return
        llama.n_tokens = done
        llama._ctx.kv_cache_seq_rm(-1, done, -1)
        for start, image in spans:
            if start + image.positions <= done:
                continue
            if start > llama.n_tokens:
                llama.eval(tokens[llama.n_tokens:start])
            after = ctypes.c_int32(0)  # the position after the image
            status = mtmd.mtmd_helper_eval_chunk_single(
                self._context, llama._ctx.ctx, image.pointer, start, 0, llama.n_batch, False, ctypes.byref(after))
            if status != 0 or after.value != start + image.positions:
                llama.n_tokens = start
                llama._ctx.kv_cache_seq_rm(-1, start, -1)
                raise BackendError(f"llama.cpp could not evaluate an image (status {status}; the context window "
                                   f"may be too small for it)")
            llama.input_ids[start:after.value] = image.placeholder
            llama.n_tokens = after.value

    def close(self) -> None:
        if self._context:
            self._mtmd.mtmd_free(self._context)
            self._context = None


class _LlamaTokens:
    """llama.generate's tokens, with how many prompt tokens it kept from the KV cache (as TokenStream)."""

    speculated = Speculated()  # llama.generate drafts nothing

    def __init__(self, tokens: Iterator[int], cached: int) -> None:
        self._tokens, self.cached = tokens, cached

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return next(self._tokens)

    def take_logprob(self) -> None:
        """llama.generate reports no log probabilities."""
        return None

    def close(self) -> None:
        self._tokens.close()
