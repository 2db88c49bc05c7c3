"""GGUF file -> Hugging Face model folder, so the transformers and MLX engines can serve catalog models.

transformers reads a GGUF (dequantizing its weights) and saves safetensors in bf16. Needs the
`transformers` extra (torch, transformers, gguf, accelerate); takes about 90 s and 3 GB of memory for
the default model on a CPU, once: the folder is kept in the store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qwend.errors import ModelFetchError


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Write `out` (config, tokenizer, chat template, bf16 safetensors) from `gguf`; atomic: a failed
    conversion leaves nothing at `out`."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelFetchError(
            f"converting {gguf.name} needs the transformers extra ({exc.name} is missing): "
            "pip install 'qwend[transformers]'"
        ) from None
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        if getattr(model, "hf_quantizer", None) is not None:
            # the weights are dequantized already; save_pretrained refuses while the GGUF config is attached
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        add_top_level_rope_theta(partial / "config.json")
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
    except ModelFetchError:
        raise
    except Exception as exc:  # transformers raises many types for an unreadable or unsupported GGUF
        raise ModelFetchError(f"could not convert {gguf.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def add_top_level_rope_theta(config_file: Path) -> None:
    """transformers 5 writes `rope_parameters.rope_theta`; mlx-lm (and older readers) want `rope_theta`."""
    config = json.loads(config_file.read_text())
    theta = (config.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and "rope_theta" not in config:
        config["rope_theta"] = theta
        config_file.write_text(json.dumps(config, indent=2) + "\n")
