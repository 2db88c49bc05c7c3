"""Images for vision tests, and a tiny random Qwen2.5-VL converted to a GGUF pair (model + mmproj) by llama.cpp's
own converter. Its answers are noise, but noise that depends on every input, so tests can compare answers
across images, across KV reuse, and across the way a prompt reaches the model.

The pair is made once into the store and kept (~40 s on a 2-core machine: llama-cpp-python's sdist from PyPI,
76 MB, for the converter its llama.cpp vendors; a random model from transformers; two conversions); the two
GGUF files (26 MB) stay, and the converter (4 MB) for the other tiny models (tests/tiny_qwen3.py).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

from tests.tiny_model import QWEN_VL_CHAT_TEMPLATE, QWEN_VL_PREPROCESSOR

MODEL_FILE = "tiny-qwen2.5-vl-f16.gguf"
MMPROJ_FILE = "mmproj-tiny-qwen2.5-vl-f16.gguf"


def png(width: int, height: int, blue: int = 0) -> bytes:
    """A gradient PNG, written with the standard library."""
    rows = (b"\0" + bytes(c for x in range(width) for c in (x * 255 // width, y * 255 // height, blue))
            for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def make_tiny_vl_gguf(tokenizer_from: Path, out: Path) -> Path:
    """A tiny random Qwen2.5-VL as `out`/MODEL_FILE + `out`/MMPROJ_FILE (once: an existing pair is kept)."""
    if (out / MODEL_FILE).is_file() and (out / MMPROJ_FILE).is_file():
        return out
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    work = out.with_name(out.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    folder = work / "hf"
    vocab_size = json.loads((tokenizer_from / "config.json").read_text())["vocab_size"]
    # weights 25x larger than transformers' default init, so that answers follow the inputs, not just noise;
    # 4 vision blocks: the converter maps the merger's layers by block index, so fewer than 3 fail
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
                         bos_token_id=151643, eos_token_id=151645, initializer_range=0.5),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1, 3], initializer_range=0.5),
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    # Qwen2.5-VL's own template, as real VL GGUFs carry it: servers render image parts with it
    (folder / "chat_template.jinja").write_text(QWEN_VL_CHAT_TEMPLATE)
    # the converter copies the image mean and std into the mmproj
    (folder / "preprocessor_config.json").write_text(json.dumps(QWEN_VL_PREPROCESSOR))
    converter = llama_cpp_converter(out.parent)
    env = {**os.environ, "PYTHONPATH": str(converter.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    for extra, name in (([], MODEL_FILE), (["--mmproj"], MMPROJ_FILE)):
        subprocess.run([sys.executable, str(converter), str(folder), *extra, "--outtype", "f16",
                        "--outfile", str(work / name)], check=True, env=env, capture_output=True)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, MMPROJ_FILE):
        (work / name).rename(out / name)
    shutil.rmtree(work)
    return out


def llama_cpp_converter(store: Path) -> Path:
    """convert_hf_to_gguf.py from the llama.cpp that the installed llama-cpp-python vendors (its PyPI sdist),
    kept under `store` for the next tiny model (only the converter and gguf-py: 4 MB)."""
    version = importlib.metadata.version("llama_cpp_python")
    kept = store / f"llama.cpp-converter-{version}"
    if (kept / "convert_hf_to_gguf.py").is_file():
        return kept / "convert_hf_to_gguf.py"
    work = store / f"llama.cpp-converter-{version}.partial"
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary", ":all:",
                    "--no-deps", "--quiet", "-d", str(work)], check=True)
    wanted = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")
    with tarfile.open(next(work.glob("llama_cpp_python-*.tar.gz"))) as sdist:
        root = f"llama_cpp_python-{version}/vendor/llama.cpp/"
        members = [m for m in sdist.getmembers() if m.name.startswith(root) and m.name[len(root):].startswith(wanted)]
        sdist.extractall(work, members=members, filter="data")
    shutil.rmtree(kept, ignore_errors=True)
    (work / root).rename(kept)
    shutil.rmtree(work)
    return kept / "convert_hf_to_gguf.py"
