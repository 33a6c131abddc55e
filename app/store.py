"""The adapter store: one immutable directory per adapter version, local or in S3.

vLLM's prefix cache is keyed by (lora name, path), so a version's files are never rewritten:
each version is written once under `<root>/<adapter>/v<N>` with a `seal.json` beside the
weights saying where it came from. The store is chosen by URL (`open_store`):

- a path or `file:///abs/path`: a local directory, or a ReadWriteMany volume shared by every
  pod. Versions are staged and renamed into place (atomic on one filesystem);
- `s3://bucket/prefix`: an S3-compatible bucket through fsspec/s3fs (`pip install
  seal-service[s3]`). Objects cannot be renamed, so `seal.json` is uploaded last and marks a
  version complete. vLLM loads adapters from local disk only, so `local_path` downloads a
  version once into a local cache directory (staged, then renamed), where it stays immutable.

The registry records `path_for(...)`: an absolute path for the local store, an `s3://` URL for
S3. Readers turn either into a directory vLLM can load with `localize(path)`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from app.config import Settings

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("adapter_config.json",)
METADATA_FILE = "seal.json"
ADAPTER_SUFFIXES = {".json", ".safetensors", ".bin", ".md"}


class Store(Protocol):
    """What the service needs from an adapter store, local or remote."""

    url: str

    def path_for(self, adapter: str, version: int) -> str: ...
    def has(self, adapter: str, version: int) -> bool: ...
    def write_version(self, adapter: str, version: int, src_dir: Path, metadata: dict[str, Any]) -> str: ...
    def read_metadata(self, path: str) -> dict[str, Any]: ...
    def local_path(self, adapter: str, version: int) -> str: ...
    def localize(self, path: str) -> str: ...
    def delete_version(self, path: str) -> None: ...
    def evict_cached(self, adapter: str) -> None: ...


class AdapterStore:
    """Local-filesystem adapter store (a ReadWriteMany volume in multi-node deployments)."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self.root.mkdir(parents=True, exist_ok=True)
        self._staging = self.root / ".staging"
        self._staging.mkdir(exist_ok=True)

    def path_for(self, adapter: str, version: int) -> str:
        return str(self.root / adapter / f"v{version}")

    def has(self, adapter: str, version: int) -> bool:
        return (Path(self.path_for(adapter, version)) / "adapter_config.json").exists()

    def write_version(self, adapter: str, version: int, src_dir: Path, metadata: dict[str, Any]) -> str:
        """Copy an adapter into its immutable version directory. Idempotent for a finished version."""
        target = Path(self.path_for(adapter, version))
        if target.exists():
            return str(target)  # a retried job already wrote it; never rewrite in place
        _check_adapter_dir(src_dir)
        staging = Path(tempfile.mkdtemp(prefix=f"{adapter}-v{version}-", dir=self._staging))
        try:
            for item in _adapter_files(src_dir):
                shutil.copy2(item, staging / item.name)
            (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
            target.parent.mkdir(parents=True, exist_ok=True)
            _fsync_dir(staging)
            os.rename(staging, target)  # atomic on one filesystem
        except FileExistsError:
            shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not target.exists():
                raise
        return str(target)

    def read_metadata(self, path: str) -> dict[str, Any]:
        return _read_local_metadata(path)

    def local_path(self, adapter: str, version: int) -> str:
        """The directory vLLM loads: here, the version directory itself."""
        return self.path_for(adapter, version)

    def localize(self, path: str) -> str:
        return path

    def delete_version(self, path: str) -> None:
        """Remove a version's files (retention); the registry row stays as lineage."""
        target = Path(path).resolve()
        if self.root not in target.parents:
            raise ValueError(f"refusing to delete {target}: outside the store {self.root}")
        shutil.rmtree(target, ignore_errors=True)

    def evict_cached(self, adapter: str) -> None:
        """Nothing is cached: vLLM loads the version directories themselves."""


class S3AdapterStore:
    """Adapter versions as objects under `s3://bucket/prefix/<adapter>/v<N>/`, cached locally for vLLM."""

    def __init__(self, url: str, cache_dir: Path, *, endpoint_url: str | None = None, fs: Any = None):
        if not url.startswith("s3://") or not url.removeprefix("s3://").strip("/"):
            raise ValueError(f"not an s3:// URL with a bucket: {url!r}")
        self.url = "s3://" + url.removeprefix("s3://").strip("/")
        if fs is None:
            try:
                import s3fs
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise RuntimeError("an s3:// adapter store needs s3fs: pip install 'seal-service[s3]'") from exc
            # use_listings_cache=False: a version published by another process must be seen at once.
            fs = s3fs.S3FileSystem(use_listings_cache=False,
                                   client_kwargs={"endpoint_url": endpoint_url} if endpoint_url else {})
        self.fs = fs
        self.cache_dir = Path(cache_dir).resolve()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._staging = self.cache_dir / ".staging"
        self._staging.mkdir(exist_ok=True)

    def path_for(self, adapter: str, version: int) -> str:
        return f"{self.url}/{adapter}/v{version}"

    def has(self, adapter: str, version: int) -> bool:
        return self.fs.exists(f"{self.path_for(adapter, version)}/{METADATA_FILE}")

    def write_version(self, adapter: str, version: int, src_dir: Path, metadata: dict[str, Any]) -> str:
        """Upload an adapter version; `seal.json` goes last and marks it complete. Idempotent."""
        target = self.path_for(adapter, version)
        if self.has(adapter, version):
            return target  # a retried job already finished it; never rewrite a published version
        _check_adapter_dir(src_dir)
        # A crash before seal.json leaves a partial version that nothing reads (the registry marks
        # a version published only after this returns); the retry overwrites it.
        for item in _adapter_files(src_dir):
            self.fs.put_file(str(item), f"{target}/{item.name}")
        self.fs.pipe_file(f"{target}/{METADATA_FILE}", json.dumps(metadata, indent=2, default=str).encode())
        return target

    def read_metadata(self, path: str) -> dict[str, Any]:
        if not path.startswith("s3://"):
            return _read_local_metadata(path)  # a local copy, or a version from before the move to S3
        try:
            return json.loads(self.fs.cat_file(f"{path.rstrip('/')}/{METADATA_FILE}"))
        except FileNotFoundError:
            return {}

    def local_path(self, adapter: str, version: int) -> str:
        """Download a version into the local cache once (atomically) and return its directory."""
        return self.localize(self.path_for(adapter, version))

    def localize(self, path: str) -> str:
        """A local directory holding `path`: local paths as they are, s3:// URLs via the cache."""
        if not path.startswith("s3://"):
            return path
        key = path.removeprefix("s3://").rstrip("/")
        target = self.cache_dir / key
        if (target / METADATA_FILE).exists():
            return str(target)
        if not self.fs.exists(f"s3://{key}/{METADATA_FILE}"):
            raise FileNotFoundError(f"adapter version not in the store (or not finished): {path}")
        staging = Path(tempfile.mkdtemp(prefix="dl-", dir=self._staging))
        try:
            for remote in self.fs.ls(f"s3://{key}", detail=False):
                name = remote.rstrip("/").rsplit("/", 1)[-1]
                if Path(name).suffix in ADAPTER_SUFFIXES:
                    self.fs.get_file(remote, str(staging / name))
            _fsync_dir(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.rename(staging, target)  # concurrent downloaders: the first rename wins
            logger.info("cached %s at %s", path, target)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / METADATA_FILE).exists():
                raise
        return str(target)

    def delete_version(self, path: str) -> None:
        """Remove a version's objects and its local cache copy (retention)."""
        if not path.startswith(self.url + "/"):
            raise ValueError(f"refusing to delete {path}: outside the store {self.url}")
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
        shutil.rmtree(self.cache_dir / path.removeprefix("s3://").rstrip("/"), ignore_errors=True)

    def evict_cached(self, adapter: str) -> None:
        """Drop this process's cached copies of every version of `adapter` (retired or purged)."""
        if "/" in adapter or adapter in ("", ".", ".."):
            raise ValueError(f"not an adapter key: {adapter!r}")
        shutil.rmtree(self.cache_dir / self.url.removeprefix("s3://") / adapter, ignore_errors=True)


def open_store(settings: Settings) -> AdapterStore | S3AdapterStore:
    """The adapter store `SEAL_ADAPTER_STORE_URL` names: a path, file:// or s3://."""
    url = settings.adapter_store_url
    if url and url.startswith("s3://"):
        cache = settings.adapter_cache_dir or settings.data_dir / "adapter-cache"
        return S3AdapterStore(url, cache, endpoint_url=settings.s3_endpoint_url)
    if url is None:
        return AdapterStore(settings.data_dir / "adapters")
    if url.startswith("file://"):
        return AdapterStore(Path(url.removeprefix("file://")))
    if "://" in url:
        raise ValueError(f"unsupported adapter store URL {url!r}: use a path, file:// or s3://")
    return AdapterStore(Path(url))


def _read_local_metadata(path: str) -> dict[str, Any]:
    meta = Path(path) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.exists() else {}


def _check_adapter_dir(src_dir: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (src_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"not a PEFT adapter directory ({', '.join(missing)} missing): {src_dir}")


def _adapter_files(src_dir: Path) -> list[Path]:
    return [p for p in sorted(src_dir.iterdir()) if p.is_file() and p.suffix in ADAPTER_SUFFIXES]


def _fsync_dir(path: Path) -> None:
    for item in path.iterdir():
        with open(item, "rb") as fh:
            os.fsync(fh.fileno())
