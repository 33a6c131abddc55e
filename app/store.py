"""The adapter store: one immutable directory per adapter version.

vLLM's prefix cache is keyed by (lora name, path), so a version's files are never rewritten:
each version is written to a staging directory and renamed into `<root>/<adapter>/v<N>`.
A `seal.json` beside the weights says where the version came from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REQUIRED_FILES = ("adapter_config.json",)
METADATA_FILE = "seal.json"


class AdapterStore:
    """Local-filesystem adapter store (a ReadWriteMany volume in multi-node deployments)."""

    def __init__(self, root: Path):
        self.root = root.resolve()
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
        missing = [f for f in REQUIRED_FILES if not (src_dir / f).exists()]
        if missing:
            raise FileNotFoundError(f"not a PEFT adapter directory ({', '.join(missing)} missing): {src_dir}")
        staging = Path(tempfile.mkdtemp(prefix=f"{adapter}-v{version}-", dir=self._staging))
        try:
            for item in src_dir.iterdir():
                if item.is_file() and (item.suffix in {".json", ".safetensors", ".bin", ".md"}):
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
        meta = Path(path) / METADATA_FILE
        return json.loads(meta.read_text()) if meta.exists() else {}


def _fsync_dir(path: Path) -> None:
    for item in path.iterdir():
        with open(item, "rb") as fh:
            os.fsync(fh.fileno())
