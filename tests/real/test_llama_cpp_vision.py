"""Images on the llama.cpp backend, with the tiny random Qwen2.5-VL GGUF pair of tests/tiny_vision.py: the
tests compare answers across images, across KV reuse, and with llama-server's way of evaluating the same
prompt."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
from pathlib import Path

import httpx
import pytest

from qwend.engine.base import Piece
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.engine.llama_cpp_vision import LlamaCppImages
from qwend.errors import InvalidRequest
from qwend.models.mmproj import find_mmproj
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Image, Message, OutputConstraint, SamplingParams, ToolSpec
from tests.tiny_vision import MMPROJ_FILE, MODEL_FILE, png

pytest.importorskip("torch")

GREEDY = SamplingParams(temperature=0, max_tokens=8)
RED, BLUE, TALL = (Image(png(64, 48), "image/png"), Image(png(64, 48, blue=255), "image/png"),
                   Image(png(40, 90, blue=128), "image/png"))


@pytest.fixture(scope="module")
def tiny_vl(tiny_vision_gguf_dir: Path) -> Path:
    return tiny_vision_gguf_dir


@pytest.fixture(scope="module")
def backend(tiny_vl: Path):
    model = LocalModel(MODEL_FILE, tiny_vl / MODEL_FILE)
    backend = LlamaCppBackend.load(model, Settings(_env_file=None, context_length=1024, threads=2))
    yield backend
    backend.close()


def generate(backend, prompt, params=GREEDY, constraint=None) -> tuple[int, str]:
    """(cached prompt tokens, the answer's text)."""
    async def collect():
        return [item async for item in backend.generate(prompt, params, constraint)]

    items = asyncio.run(collect())
    return items[0].cached_tokens, "".join(i.text for i in items if isinstance(i, Piece))


def ask(backend, *images: Image, text: str = "What is this?") -> str:
    return generate(backend, backend.prompt([Message("user", text, images=images)]))[1]


def test_the_projector_beside_the_model_gives_it_vision(backend, tiny_vl):
    assert isinstance(backend.images, LlamaCppImages)
    assert backend.info.vision
    assert backend.images.mmproj == tiny_vl / MMPROJ_FILE


@pytest.mark.parametrize(("model", "beside", "found"), [
    ("Qwen2.5-VL-3B-Instruct-Q4_K_M.gguf", ["mmproj-Qwen2.5-VL-3B-Instruct-f16.gguf", "other.gguf"], 0),
    ("SmolVLM-500M.Q8_0.gguf", ["mmproj-SmolVLM-500M.Q8_0.gguf", "mmproj-Qwen2-VL-2B-f16.gguf"], 0),
    ("model-q4_k_m.gguf", ["mmproj-model-f16.gguf"], 0),  # LM Studio: a folder of its own
    ("Qwen2.5-VL-7B-UD-Q4_K_XL.gguf", ["mmproj-F16.gguf"], 0),
    ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ["mmproj-F16.gguf", "SmolLM2-135M.gguf"], None),  # whose is it?
    ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", ["SmolLM2-135M.gguf"], None),
])
def test_which_projector_belongs_to_a_model(tmp_path, model, beside, found):
    for name in [model, *beside]:
        (tmp_path / name).write_bytes(b"GGUF")
    assert find_mmproj(tmp_path / model) == (None if found is None else tmp_path / beside[found])


def test_a_projector_made_for_another_model_leaves_it_serving_text(model_path, tiny_vl, tmp_path, caplog):
    (tmp_path / model_path.name).symlink_to(model_path)
    (tmp_path / f"mmproj-{model_path.name}").symlink_to(tiny_vl / MMPROJ_FILE)  # named as the default model's
    model = LocalModel(model_path.name, tmp_path / model_path.name)
    backend = LlamaCppBackend.load(model, Settings(_env_file=None, context_length=512, threads=2))
    try:
        assert backend.images is None and not backend.info.vision
        assert "without vision" in caplog.text
    finally:
        backend.close()


def test_the_answer_follows_the_image(backend):
    red = ask(backend, RED)
    assert ask(backend, BLUE) != red
    assert ask(backend, RED) == red  # evaluated again after the other image
    assert ask(backend) != red  # no image


def test_answers_as_llama_server_evaluates_the_prompt_also_from_the_kv_cache(backend, tiny_vl):
    """The reference: the whole prompt text through mtmd_tokenize and mtmd_helper_eval_chunks on a fresh
    context, as llama-server does. qwend evaluates images apart from text and keeps them in the KV cache."""
    history = [Message("user", "What is this?", images=(RED,)), Message("assistant", "A picture."),
               Message("user", "And these two?", images=(TALL, RED))]
    first = backend.prompt(history)
    assert generate(backend, first)[1] == _reference(tiny_vl, first.text, [RED, TALL, RED])
    second = backend.prompt([*history, Message("assistant", "Pictures."), Message("user", "Which is taller?")])
    cached, answer = generate(backend, second)
    assert cached >= len(first.tokens) - 1  # all three images were kept
    assert answer == _reference(tiny_vl, second.text, [RED, TALL, RED])


def _reference(folder: Path, text: str, images: list[Image]) -> str:
    import llama_cpp
    from llama_cpp import Llama, mtmd_cpp as mtmd

    llama = Llama(str(folder / MODEL_FILE), n_ctx=1024, n_threads=2, verbose=False)
    context = mtmd.mtmd_init_from_file(str(folder / MMPROJ_FILE).encode(), llama._model.model,
                                       mtmd.mtmd_context_params_default())
    chunks = mtmd.mtmd_input_chunks_init()
    bitmaps = [mtmd.mtmd_helper_bitmap_init_from_buf(
        context, (ctypes.c_uint8 * len(i.data)).from_buffer_copy(i.data), len(i.data), False) for i in images]
    try:
        prompt = mtmd.mtmd_input_text()
        prompt.text = encoded = text.encode()
        prompt.text_len, prompt.add_special, prompt.parse_special = len(encoded), False, True
        array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
        assert mtmd.mtmd_tokenize(context, chunks, ctypes.byref(prompt), array, len(bitmaps)) == 0
        end = llama_cpp.llama_pos(0)
        assert mtmd.mtmd_helper_eval_chunks(context, llama._ctx.ctx, chunks, 0, 0, 512, True, ctypes.byref(end)) == 0
        llama.n_tokens = end.value
        answer = []
        for _ in range(GREEDY.max_tokens):
            token = llama.sample(temp=0)
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                break
            answer.append(token)
            llama.eval([token])
        return llama.detokenize(answer).decode("utf-8", "replace")
    finally:
        mtmd.mtmd_input_chunks_free(chunks)
        for bitmap in bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)
        mtmd.mtmd_free(context)
        llama.close()


def test_an_image_counts_its_kv_cells_not_only_its_positions(backend):
    prompt = backend.prompt([Message("user", "What is this?", images=(RED,))])
    text_only = backend.prompt([Message("user", "What is this?")])
    # 64x48 pixels: a 4x3 grid of merged patches, 12 tokens at max(4, 3) M-RoPE positions, between
    # <|vision_start|> and <|vision_end|>
    assert len(prompt.tokens) == len(text_only.tokens) + 2 + 4
    assert prompt.length == len(text_only.tokens) + 2 + 12


def test_text_prompts_keep_the_text_path(backend):
    prompt = backend.prompt([Message("user", "What is this?")])
    assert type(prompt).__name__ == "Prompt"
    assert min(prompt.tokens) >= 0


def test_tool_calls_are_generated_from_a_prompt_with_images(backend):
    """Calls are generated from another prompt (the parallel hint added): its images are found too."""
    look = ToolSpec("look", "Look closer", {"type": "object", "properties": {}, "additionalProperties": False})
    messages = [Message("user", "Look at this.", images=(BLUE,))]
    prompt = backend.prompt(messages, (look,))
    calls = backend.prompt([*messages, Message("system", "One call per item.")], (look,))
    constraint = OutputConstraint(tools=(look,), calls="required", parallel=False)
    constraint = OutputConstraint(grammar=backend.grammar_for(constraint))
    _, answer = generate(backend, calls, SamplingParams(temperature=0, max_tokens=40), constraint)
    assert answer.startswith('<tool_call>\n{') and '"look"' in answer


def test_an_unreadable_image_is_refused_as_a_bad_request(backend):
    with pytest.raises(InvalidRequest, match="could not read an image"):
        backend.prompt([Message("user", "What is this?", images=(Image(b"not a picture", "image/png"),))])


def test_an_image_streams_through_the_openai_api(backend, tiny_vl, tmp_path):
    from qwend.cli.local_server import serve_in_thread

    settings = Settings(_env_file=None, data_dir=tmp_path, models_dir=tiny_vl, model=MODEL_FILE,
                        context_length=1024, threads=2)
    runtime = Runtime.create(settings)
    url = "data:image/png;base64," + base64.b64encode(RED.data).decode()
    body = {"model": MODEL_FILE, "temperature": 0, "max_tokens": 8, "stream": True, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                     {"type": "text", "text": "What is this?"}]}]}
    try:
        with serve_in_thread(runtime) as base:
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=120) as response:
                assert response.status_code == 200
                lines = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    finally:
        runtime.models.close()
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    assert text == ask(backend, RED)
