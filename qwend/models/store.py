"""Models on disk: resolving a name to a path, pulling what is missing, listing what is there.

llama.cpp loads GGUF files; transformers and MLX load Hugging Face folders (config.json, safetensors,
tokenizer). Names, in the order they are tried:

                                            GGUF (files)                      folders
  1. a catalog name or alias                <store>/<catalog filename>        <store>/converted/<name>, made
     (`qwen2.5-coder:0.5b`)                                                   from the GGUF by `qwend pull`
  2. `hf:OWNER/REPO[:FILE]`                 <store>/hf/OWNER/REPO/FILE        <store>/hf/OWNER/REPO
  3. in the models folder or store          a `.gguf` file name               a folder name
  4. a path named in the settings           -                                 that model folder
     (QWEND_MODEL, seed 003's INFERENCE_MODEL_ID, ...)

Every name is checked (names.py) and every path it becomes must resolve inside the store or the models folder;
only the operator's own settings may name a folder elsewhere.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from qwend.errors import InvalidRequest, ModelFetchError, ModelNotFound, QwendError
from qwend.models.catalog import CATALOG, CatalogEntry, find_entry
from qwend.models.names import (
    HUB_FILE, HUB_SYNTAX, LOCAL_FOLDER, LOCAL_GGUF, check_name, inside, is_hub_repo, parse_hub_name, real_path,
)
from qwend.models.sources import PYPI, HubFile, HubFolder, OnProgress, no_progress


@dataclass(frozen=True)
class LocalModel:
    name: str
    path: Path | None  # None until a hub pull picks its file (and for an upstream server's models)
    entry: CatalogEntry | None = None
    draft: LocalModel | None = None  # the model that drafts for it, when one does (engine/draft_model.py)

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
    try:
        return (path / "config.json").is_file()
    except OSError:  # a name too long for the file system, a folder qwend may not read: no model of its own
        return False


def _model_files(paths) -> list[Path]:
    """GGUF models, sorted, without the multimodal projectors (mmproj*.gguf) that sit beside vision models."""
    return sorted(p for p in paths if not p.name.lower().startswith("mmproj"))


class ModelStore:
    def __init__(self, store_dir: Path, models_dir: Path, *, folders: bool = False, index: str = PYPI,
                 configured: Iterable[str | None] = ()) -> None:
        self.store_dir = store_dir
        self.models_dir = models_dir
        self.folders = folders  # Hugging Face folders (transformers, MLX) rather than GGUF files
        self.index = index  # the package index the catalog's wheels come from
        # model folders the operator's settings name by path (seed 003's INFERENCE_MODEL_ID=./Qwen2.5-14B-Instruct):
        # the only folders outside the two roots a name may reach, and never deleted
        self.configured = {name: path for name in configured if name and (path := real_path(name)) is not None}

    def resolve(self, name: str) -> LocalModel:
        """Map a name to where its file is or would be: always a real path inside the store or the models
        folder (or a folder the settings name). InvalidRequest for a malformed name, ModelNotFound for a name
        that matches nothing (paths elsewhere included)."""
        check_name(name)
        if self.folders:
            return self._resolve_folder(name)
        if entry := find_entry(name):
            return LocalModel(entry.name, self._in_store(name, entry.filename), entry)
        if name.startswith("hf:"):
            repo, filename = parse_hub_name(name)
            if filename is None:
                found = self._hub_files(repo)
                path = found[0] if found else None
            else:
                path = self._in_store(name, "hf", *repo.split("/"), filename)
            return LocalModel(f"hf:{repo}:{path.name}" if path else f"hf:{repo}", path)
        if LOCAL_GGUF.fullmatch(name):
            for root in (self.models_dir, self.store_dir):
                if (path := inside(root, name)) is not None and path.is_file():
                    return LocalModel(name, path, None)
        raise self._not_found(name, f"hf:OWNER/REPO[:FILE] (a GGUF on Hugging Face), or a .gguf file in "
                                    f"{self.models_dir}")

    def _resolve_folder(self, name: str) -> LocalModel:
        if entry := find_entry(name):
            return LocalModel(entry.name, self._in_store(name, "converted", entry.name.replace(":", "-")), entry)
        if name.startswith("hf:"):
            repo, filename = parse_hub_name(name)
            if filename is not None:
                raise InvalidRequest(f"{name[:120]!r} names a GGUF file; transformers and mlx load a whole "
                                     "repository: hf:OWNER/REPO", param="model")
            return LocalModel(f"hf:{repo}", self._in_store(name, "hf", *repo.split("/")))
        if LOCAL_FOLDER.fullmatch(name):
            for root in (self.models_dir, self.store_dir):
                if (path := inside(root, name)) is not None and is_model_folder(path):
                    return LocalModel(name, path)
        wanted = real_path(name)
        for configured, path in self.configured.items():
            if wanted == path and is_model_folder(path):
                return LocalModel(configured, path)
        raise self._not_found(name, f"hf:OWNER/REPO, or a Hugging Face model folder in {self.models_dir} (a path "
                                    "elsewhere only when the settings name it, as QWEND_MODEL)")

    def _not_found(self, name: str, other_names: str) -> ModelNotFound:
        """What exists, and how to fetch what does not: the answer to a request naming a model not here."""
        here = ", ".join(self._names_on_disk()) or "none"
        repo = f" (as a Hugging Face repository: `qwend pull hf:{name}`)" if is_hub_repo(name) else ""
        return ModelNotFound(
            f"model {name!r} not found{repo}. On disk: {here}. `qwend pull NAME` (or Ollama's POST /api/pull) fetches "
            f"a catalog model ({', '.join(e.name for e in CATALOG)}); other names: {other_names}", param="model")

    def _in_store(self, name: str, *parts: str) -> Path:
        """`<store>/parts...`, resolved; a symlink in the store that leads out of it makes the name not found."""
        if (path := inside(self.store_dir, *parts)) is None:
            raise ModelNotFound(f"model {name!r} not found: its place in the store leads outside the store",
                                param="model")
        return path

    def _hub_files(self, repo: str) -> list[Path]:
        """The GGUF models a hub pull left in the repository's folder, by real path."""
        folder = inside(self.store_dir, "hf", *repo.split("/"))
        if folder is None or not folder.is_dir():
            return []
        names = [p.name for p in _model_files(folder.glob("*.gguf")) if HUB_FILE.fullmatch(p.name)]
        found = (inside(self.store_dir, "hf", *repo.split("/"), name) for name in names)
        return [p for p in found if p is not None and p.is_file()]

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
        if not name.startswith("hf:"):  # a models-folder name that vanished between resolve and now
            raise ModelFetchError(f"{name!r} is not a name qwend can fetch")
        repo, filename = parse_hub_name(name)
        fetched = HubFile(repo, filename).fetch(self._in_store(name, "hf", *repo.split("/")))
        try:
            pulled = self.resolve(f"hf:{repo}:{fetched.name}")
        except InvalidRequest:
            pulled = None
        if pulled is None or pulled.path != real_path(str(fetched)):  # the hub chose a file in a subfolder
            raise ModelFetchError(f"the hub put {fetched} where no {HUB_SYNTAX} name reaches it")
        return pulled

    def remove(self, name: str) -> LocalModel:
        """Delete a model qwend keeps (in the store or the models folder) from disk, with any unfinished
        download of it. A model loaded from the file goes on working until it is unloaded. Only what sits
        where qwend keeps models is deleted: a file or folder directly in the models folder or the store,
        `<store>/hf/OWNER/REPO[/FILE]` and `<store>/converted/NAME`."""
        model = self.find(name)
        if not self._kept_here(model.path):
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

    def _kept_here(self, path: Path) -> bool:
        hub_depth = 3 if self.folders else 4  # hf/OWNER/REPO, or hf/OWNER/REPO/FILE
        for root, store in ((self.models_dir, False), (self.store_dir, True)):
            real_root = real_path(str(root))
            if real_root is None or path == real_root or not path.is_relative_to(real_root):
                continue
            parts = path.relative_to(real_root).parts
            if (len(parts) == 1 or store and (parts[0], len(parts)) in (("hf", hub_depth), ("converted", 2))) \
                    and (is_model_folder(path) if self.folders else path.is_file()):
                return True
        return False

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

    def _names_on_disk(self) -> list[str]:
        """For messages: the catalog models present, and the files of the models folder, read without resolving
        anything (`list` resolves each name, and a name that fails would ask for this message again)."""
        present = [e.name for e in CATALOG if self.resolve(e.name).present]
        try:
            files = sorted(p.name for p in self.models_dir.iterdir()) if self.models_dir.is_dir() else []
        except OSError:
            files = []
        return present + [f for f in files if (f.lower().endswith(".gguf") and not self.folders) or
                          (self.folders and is_model_folder(self.models_dir / f))]

    def list(self) -> list[LocalModel]:
        """Every model on disk: catalog models, hub pulls and the models folder. Only what its own name
        resolves back to is listed (no symlinks out of the folders, no names a request could not use)."""
        if self.folders:
            return self._list_folders()
        found = [m for m in (self.resolve(e.name) for e in CATALOG) if m.present]
        hub = self.store_dir / "hf"
        if hub.is_dir():
            found += self._listed((f"hf:{p.parent.parent.name}/{p.parent.name}:{p.name}", p)
                                  for p in _model_files(hub.glob("*/*/*.gguf")))
        for folder in (self.models_dir, self.store_dir):
            if folder.is_dir():
                found += self._listed((p.name, p) for p in _model_files(folder.glob("*.gguf")))
        return _unique(found)

    def _list_folders(self) -> list[LocalModel]:
        found = [m for m in (self.resolve(e.name) for e in CATALOG) if m.present]
        hub = self.store_dir / "hf"
        if hub.is_dir():
            found += self._listed((f"hf:{p.parent.name}/{p.name}", p) for p in sorted(hub.glob("*/*")))
        if self.models_dir.is_dir():
            found += self._listed((p.name, p) for p in sorted(self.models_dir.iterdir()))
        return _unique(found)

    def _listed(self, candidates: Iterable[tuple[str, Path]]) -> list[LocalModel]:
        """The candidates whose name resolves to them, present."""
        found = []
        for name, path in candidates:
            try:
                model = self.resolve(name)
            except QwendError:
                continue
            if model.present and model.path == real_path(str(path)):
                found.append(model)
        return found


def _unique(models: list[LocalModel]) -> list[LocalModel]:
    """Each file or folder once (a models-folder name can resolve to a file the store listing found too)."""
    seen: set[Path | None] = set()
    return [m for m in models if not (m.path in seen or seen.add(m.path))]
