"""Image input on the transformers backend: Qwen2-VL and Qwen2.5-VL model folders.

The token loop is TransformersBackend's; TransformersImages, which it holds for such a folder, adds what
images need around it:
- prompt(): the chat template emits one <|image_pad|> per picture; the folder's image processor (its PIL
  backend: no torchvision needed) turns each picture into patches, and the placeholder is expanded to one
  token per merged patch, so prompt lengths count the image.
- forwards: embeddings with the vision tower's features written over the placeholders, and the model's 3D
  (time, height, width) rotary positions for the whole sequence, passed explicitly. The model's own
  position bookkeeping (`rope_deltas`, kept on the model between calls) would be stale across our jobs.
- KV reuse: every placeholder is the same token id, so equal ids do not mean equal pictures. The cached
  prefix is kept up to the first image whose picture (sha256 of its file) differs, or that the cut would
  split; text-only prompts reuse as on text models.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Any, NamedTuple

from qwend.engine.base import Prompt, TemplatedPrompts
from qwend.errors import BackendError, InvalidRequest
from qwend.types import Image, Message, ToolSpec

# config.json model types whose folders load as image-text models with a Qwen2-VL image processor
VISION_MODEL_TYPES = frozenset({"qwen2_vl", "qwen2_5_vl"})


def load_image_processor(path: Path):
    """The folder's image processor when it holds a vision model we serve, else None. The PIL backend: the
    default one needs torchvision, which has no CPU build everywhere."""
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None  # not ours to judge: the text loader reports what is wrong with the folder
    if model_type not in VISION_MODEL_TYPES:
        return None
    try:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(path, local_files_only=True, backend="pil")
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise BackendError(f"transformers could not load the image processor of {path.name} (a {model_type} "
                           f"model; reading images needs Pillow): {exc}") from exc


def processor_chat_template(path: Path) -> str | None:
    """The processor's chat template: Qwen-VL folders keep it in chat_template.json (or .jinja), where the
    tokenizer does not look."""
    if (jinja := path / "chat_template.jinja").is_file():
        return jinja.read_text()
    try:
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    except (OSError, ValueError):
        return None


class ImageSpan(NamedTuple):
    """Where a picture's placeholder tokens sit in a sequence, and which picture it is."""

    start: int
    length: int
    digest: bytes  # sha256 of the encoded file


@dataclass(frozen=True)
class PromptImage:
    span: ImageSpan
    pixels: Any = field(compare=False, repr=False)  # the processor's pixel_values rows for this picture
    grid: Any = field(compare=False, repr=False)  # its (t, h, w) patch grid, a tensor of 3


@dataclass(frozen=True)
class VisionPrompt(Prompt):
    """A prompt whose image placeholders are expanded, with the pictures that go in them, in order."""

    images: tuple[PromptImage, ...] = ()


class TransformersImages:
    """What a TransformersBackend holds when its folder is a Qwen2-VL or Qwen2.5-VL model: the image processor,
    the placeholder expansion of prompts, and each generation's pictures and positions (`sequence`)."""

    def __init__(self, processor, image_token: int, chat_template: str | None) -> None:
        self.processor = processor
        self.image_token = image_token
        self.chat_template = chat_template  # the one written for image content parts, where the folder has it
        self._merge = int(processor.merge_size) ** 2  # patches per placeholder token

    @classmethod
    def load(cls, path: Path, options: dict):
        """(the model, its images) for a vision folder, or None for another; blocking."""
        processor = load_image_processor(path)
        if processor is None:
            return None
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, **options)
        return model, cls(processor, int(model.config.image_token_id), processor_chat_template(path))

    def prompt(
        self, templated: TemplatedPrompts, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
        thinking: bool | None = None,
    ) -> Prompt:
        """The prompt for a conversation with pictures, rendered and tokenized by the backend `templated`."""
        pictures = [image for message in messages for image in message.images]
        text = templated.render(messages, tools, thinking=thinking)
        ids = templated.tokens(text)
        places = [i for i, token in enumerate(ids) if token == self.image_token]
        if len(places) != len(pictures):  # (an <|image_pad|> in a message's text is text: never one of these)
            raise InvalidRequest(f"the prompt has {len(places)} image placeholders for {len(pictures)} images",
                                 param="messages")
        pixels, grids = self._pixels(pictures)
        expanded: list[int] = []
        images: list[PromptImage] = []
        done = row = 0
        for place, picture, grid in zip(places, pictures, grids):
            expanded.extend(ids[done:place])
            patches = int(grid.prod())
            span = ImageSpan(len(expanded), patches // self._merge, hashlib.sha256(picture.data).digest())
            images.append(PromptImage(span, pixels[row:row + patches], grid))
            expanded.extend([self.image_token] * span.length)
            done, row = place + 1, row + patches
        expanded.extend(ids[done:])
        return VisionPrompt(tuple(expanded), templated.controls.unmask(text), images=tuple(images))

    def _pixels(self, pictures: Sequence[Image]):
        """The processor's pixel_values (patch rows of every picture, in order) and image_grid_thw."""
        from PIL import Image as PillowImage

        decoded = []
        for number, picture in enumerate(pictures, 1):
            try:
                with PillowImage.open(io.BytesIO(picture.data)) as opened:
                    decoded.append(opened.convert("RGB"))  # also takes a GIF's first frame and drops alpha
            except (OSError, ValueError, PillowImage.DecompressionBombError) as exc:
                raise InvalidRequest(f"image {number} ({picture.mime_type}) could not be read: {exc}",
                                     param="messages") from exc
        try:
            out = self.processor(images=decoded, return_tensors="pt")
        except ValueError as exc:  # e.g. an aspect ratio past 200:1
            raise InvalidRequest(f"the images could not be prepared for the model: {exc}", param="messages") from exc
        return out["pixel_values"], out["image_grid_thw"]

    @staticmethod
    def sequence(model, prompt: list[int], images: Sequence[PromptImage]) -> _Sequence:
        """One generation's pictures and positions (on the worker thread: it runs the model's rope index)."""
        return _Sequence(model, prompt, tuple(images))


def image_cut(cached: Sequence[ImageSpan], wanted: Sequence[ImageSpan], shared: int) -> int:
    """How much of `shared` (the tokens the cached sequence and the prompt have in common) can be kept: up to
    the first picture that differs between them, or that the cut would split (its features go in whole)."""
    for old, new in zip_longest(cached, wanted):
        start = min(span.start for span in (old, new) if span is not None)
        if start >= shared:
            break
        if old != new or start + new.length > shared:
            return start
    return shared


class _Sequence:
    """One prompt's pictures and positions, for the forwards of one generation. Positions come from the
    model's get_rope_index over the whole prompt (a chunk alone could not place its image in the grid);
    generated tokens continue after the prompt's largest position."""

    def __init__(self, model, prompt: list[int], images: tuple[PromptImage, ...]) -> None:
        import torch

        self.model = model
        self.images = images
        self.spans = tuple(image.span for image in images)
        self.features: dict[int, Any] = {}  # image index -> its placeholder embeddings, computed once
        self.length = len(prompt)
        device = model.device
        if not images:
            self.prompt_positions = torch.arange(self.length, device=device).expand(3, -1)
            self.delta = 0
            return
        kinds = torch.zeros(1, self.length, dtype=torch.int, device=device)  # 1: an image's token
        for span in self.spans:
            kinds[0, span.start:span.start + span.length] = 1
        positions, deltas = model.model.get_rope_index(
            torch.tensor([prompt], device=device), mm_token_type_ids=kinds,
            image_grid_thw=torch.stack([image.grid for image in images]).to(device))
        self.prompt_positions = positions[:, 0]
        self.delta = int(deltas.flatten()[0])

    def inputs(self, ids: list[int], start: int) -> dict:
        """The model's inputs for `ids`, which sit at `start` in the sequence: embeddings with the pictures'
        features in them, and 3D positions."""
        import torch

        embeds = self.model.get_input_embeddings()(torch.tensor([ids], device=self.model.device))
        self.write_images(embeds, start)
        return {"inputs_embeds": embeds, "position_ids": self.positions(start, len(ids))}

    def positions(self, start: int, count: int):
        """3D positions (3, 1, count) of the tokens at start .. start + count."""
        import torch

        end = start + count
        known = self.prompt_positions[:, start:min(end, self.length)]
        after = torch.arange(max(start, self.length), max(end, self.length), device=known.device) + self.delta
        return torch.cat([known, after.expand(3, -1)], dim=1).unsqueeze(1)

    def write_images(self, embeds, start: int) -> None:
        """Put the pictures' features over their placeholders among the tokens at `start` (in place)."""
        end = start + embeds.shape[1]
        for index, image in enumerate(self.images):
            first, last = max(start, image.span.start), min(end, image.span.start + image.span.length)
            if first >= last:
                continue
            features = self._features(index)
            embeds[0, first - start:last - start] = features[first - image.span.start:last - image.span.start].to(
                embeds.dtype)

    def _features(self, index: int):
        if index not in self.features:
            image = self.images[index]
            device = self.model.device
            out = self.model.get_image_features(image.pixels.to(device), image.grid.to(device)[None],
                                                return_dict=True)
            self.features[index] = out.pooler_output[0]
        return self.features[index]
