"""A tiny random Qwen2 (2 layers, hidden 64) with the default model's tokenizer: loads in a second on every
engine, for plumbing tests. Its text is noise; anything about answers uses the converted default model."""

from __future__ import annotations

import shutil
from pathlib import Path

from qwend.models.convert import add_top_level_rope_theta

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def make_tiny_qwen2(tokenizer_from: Path, out: Path) -> Path:
    """Write the tiny model to `out` (once: an existing folder is kept)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    source = AutoConfig.from_pretrained(tokenizer_from)
    config = AutoConfig.for_model(
        "qwen2", vocab_size=source.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=source.bos_token_id, eos_token_id=source.eos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    AutoModelForCausalLM.from_config(config).save_pretrained(partial)
    for name in TOKENIZER_FILES:
        if (tokenizer_from / name).is_file():
            shutil.copy(tokenizer_from / name, partial / name)
    add_top_level_rope_theta(partial / "config.json")
    partial.rename(out)
    return out
