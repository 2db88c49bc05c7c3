"""Model files on disk: resolving a name to a path, pulling what is missing, listing what is there.

Names, in the order they are tried:
  1. a catalog name or alias (`qwen2.5-coder:0.5b`) -> <store>/<catalog filename>
  2. `hf:OWNER/REPO[:FILE]`                           -> <store>/hf/OWNER/REPO/FILE
  3. a GGUF file name in the models folder or store   -> that file, used in place
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qwend.errors import ModelFetchError, ModelNotFound
from qwend.models.catalog import CATALOG, CatalogEntry, find_entry
from qwend.models.sources import HubFile, OnProgress

_HF_NAME = re.compile(r"hf:([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w./-]+\.gguf))?")
_FILE_NAME = re.compile(r"[\w][\w.+-]*\.gguf", re.IGNORECASE)


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path | None  # None until a hub pull picks its file
    entry: CatalogEntry | None = None

    @property
    def present(self) -> bool:
        return self.path is not None and self.path.is_file()

    @property
    def size_class(self) -> str:
        return self.entry.size_class if self.entry else "small"


class ModelStore:
    def __init__(self, store_dir: Path, models_dir: Path) -> None:
        self.store_dir = store_dir
        self.models_dir = models_dir

    def resolve(self, name: str) -> LocalModel:
        """Map a name to where its file is or would be. Raises ModelNotFound for unknown names."""
        if entry := find_entry(name):
            return LocalModel(entry.name, self.store_dir / entry.filename, entry)
        if match := _HF_NAME.fullmatch(name):
            repo, filename = match.groups()
            if filename and ".." in filename.split("/"):
                raise ModelNotFound(f"invalid file name in {name!r}", param="model")
            folder = self.store_dir / "hf" / repo
            if filename is None:
                found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
                path = found[0] if found else None
            else:
                path = folder / filename
            return LocalModel(f"hf:{repo}:{path.name}" if path else name, path)
        if _FILE_NAME.fullmatch(name):
            for folder in (self.models_dir, self.store_dir):
                if (folder / name).is_file():
                    return LocalModel(name, folder / name, None)
        raise ModelNotFound(
            f"model {name!r} not found; known names: {', '.join(e.name for e in CATALOG)}, "
            f"hf:OWNER/REPO[:FILE], or a .gguf file in {self.models_dir}",
            param="model",
        )

    def find(self, name: str) -> LocalModel:
        """Like resolve, but the file must be on disk."""
        model = self.resolve(name)
        if not model.present:
            raise ModelNotFound(f"model {name!r} is not on disk; run `qwend pull {name}`", param="model")
        return model

    def pull(self, name: str, on_progress: OnProgress = lambda n: None) -> LocalModel:
        """Fetch a model if it is missing and return it; a no-op for files already there."""
        model = self.resolve(name)
        if model.present:
            return model
        if model.entry is not None:
            model.entry.source.fetch(model.path, sha256=model.entry.sha256, on_progress=on_progress)
            return model
        match = _HF_NAME.fullmatch(name)
        if match is None:  # a models-folder name that vanished between resolve and now
            raise ModelFetchError(f"{name!r} is not a name qwend can fetch")
        repo, filename = match.groups()
        path = HubFile(repo, filename).fetch(self.store_dir / "hf" / repo)
        return LocalModel(f"hf:{repo}:{path.name}", path)

    def list(self) -> list[LocalModel]:
        """Every model file on disk: catalog models, hub pulls and the models folder."""
        found = [m for m in (self.resolve(e.name) for e in CATALOG) if m.present]
        hub = self.store_dir / "hf"
        if hub.is_dir():
            for path in sorted(hub.glob("*/*/*.gguf")):
                repo = f"{path.parent.parent.name}/{path.parent.name}"
                found.append(LocalModel(f"hf:{repo}:{path.name}", path))
        known = {m.path for m in found}
        for folder in (self.models_dir, self.store_dir):
            if folder.is_dir():
                for path in sorted(folder.glob("*.gguf")):
                    if path not in known:
                        found.append(LocalModel(path.name, path))
                        known.add(path)
        return found
