"""A tiny random Qwen2 (2 layers, hidden 64) with the default model's tokenizer: loads in a second on every
engine, for plumbing tests. Its text is noise; anything about answers uses the converted default model."""

from __future__ import annotations

import json
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


# Qwen2.5-VL-Instruct's own chat template (its chat_template.json): images and videos as content parts
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in "
    "content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}"
    "Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] "
    "== 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}"
    "Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

# Qwen2.5-VL-3B-Instruct's preprocessor_config.json, as published
QWEN_VL_PREPROCESSOR = {
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def tiny_qwen2_5_vl_config(vocab_size: int) -> dict:
    """A config.json laid out as Qwen2.5-VL-3B-Instruct's (text fields at the top level, `rope_scaling` with
    mrope sections, the vision tower nested), with tiny sizes: 2 text layers of 64, a 2-block vision tower."""
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl",
        "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655, "video_token_id": 151656,
        "hidden_act": "silu", "hidden_size": 64, "intermediate_size": 128, "max_position_embeddings": 4096,
        "max_window_layers": 2, "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "sliding_window": 4096, "use_sliding_window": False,
        "tie_word_embeddings": True, "torch_dtype": "float32", "use_cache": True, "vocab_size": vocab_size,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},  # halves of the 16-wide heads: t, h, w
        "vision_config": {
            "depth": 2, "hidden_act": "silu", "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
            "in_chans": 3, "out_hidden_size": 64, "patch_size": 14, "spatial_merge_size": 2,
            "spatial_patch_size": 14, "window_size": 112, "fullatt_block_indexes": [1], "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
    }


def make_tiny_qwen2_5_vl(tokenizer_from: Path, out: Path) -> Path:
    """A tiny random Qwen2.5-VL folder at `out` with the files a real one has (config, weights, tokenizer,
    chat_template.json, preprocessor_config.json); made once, an existing folder is kept."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    source = AutoConfig.from_pretrained(tokenizer_from)
    config_text = json.dumps(tiny_qwen2_5_vl_config(source.vocab_size), indent=2) + "\n"
    (partial / "config.json").write_text(config_text)
    torch.manual_seed(0)
    AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(partial)).save_pretrained(partial)
    (partial / "config.json").write_text(config_text)  # the hub's layout, not the one transformers 5 writes
    _hub_weight_names(partial / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tokenizer_from / name, partial / name)
    (partial / "chat_template.json").write_text(json.dumps({"chat_template": QWEN_VL_CHAT_TEMPLATE}, indent=2))
    (partial / "preprocessor_config.json").write_text(json.dumps(QWEN_VL_PREPROCESSOR, indent=2))
    partial.rename(out)
    return out


def _hub_weight_names(weights: Path) -> None:
    """Rename the weights as published Qwen2.5-VL checkpoints name them (`model.layers...`, `visual...`), which
    transformers 5 renames back while loading."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    renamed = {name.replace("model.language_model.", "model.", 1).replace("model.visual.", "visual.", 1): tensor
               for name, tensor in tensors.items()}
    save_file(renamed, weights, metadata={"format": "pt"})
