"""What the engines that load Hugging Face model folders (transformers, MLX) share: the folder check, the
tokenizer call, and which tokens end a turn."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from qwend.engine.specials import ControlTexts
from qwend.errors import BackendError
from qwend.models.store import LocalModel

# Special tokens that end a turn in common chat vocabularies, as llama.cpp recognises them, for the engines
# with Hugging Face tokenizers: a Qwen folder names only <|im_end|> as eos, yet <|endoftext|> ends a turn too.
END_OF_TURN_TEXTS = frozenset({
    "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|end|>", "<end_of_turn>",
})


def model_folder(model: LocalModel, engine: str) -> Path:
    """The model's folder; a BackendError for anything else (a loader handed a missing path would take it for a
    hub repository id and try to download it)."""
    if model.path is None or not model.path.is_dir():
        raise BackendError(f"{model.name}: {engine} loads Hugging Face model folders, and {model.path} is not one "
                           "(serve .gguf files with --backend llama_cpp)")
    return model.path


class HuggingFaceTokens:
    tokenizer: object

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        # the rendered template already holds its special tokens (and Qwen has no BOS); `split_special_tokens`
        # reads control-token texts as text
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special)


def read_vocabulary(tokenizer) -> tuple[ControlTexts, int]:
    """The texts of the tokenizer's special tokens, and the most characters one token stands for (a piece's
    characters: a byte each for byte-level BPE, at least one each for SentencePiece)."""
    controls = ControlTexts(token.content for token in tokenizer.added_tokens_decoder.values() if token.special)
    return controls, max(map(len, tokenizer.get_vocab()), default=0)


def end_of_turn_ids(tokenizer, eos_ids: Iterable[int | list[int] | None]) -> frozenset[int]:
    """The eos ids the tokenizer and configs name (each an id, a list of ids or None), and the vocabulary's other
    end-of-turn special tokens."""
    ids: set[int] = set()
    for eos in eos_ids:
        ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    ids.update(token_id for token, token_id in tokenizer.get_added_vocab().items() if token in END_OF_TURN_TEXTS)
    return frozenset(ids)
