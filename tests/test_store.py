"""Adapter store: immutable version directories with self-describing metadata."""

from __future__ import annotations

import json

import pytest

from app.store import AdapterStore


def make_adapter(path, content: bytes = b"weights"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (path / "adapter_model.safetensors").write_bytes(content)
    return path


def test_write_version_is_immutable_and_described(tmp_path):
    store = AdapterStore(tmp_path / "store")
    target = store.write_version("notes", 1, make_adapter(tmp_path / "a"), {"job_id": "j1"})
    assert target == str(tmp_path / "store" / "notes" / "v1")
    assert store.read_metadata(target)["job_id"] == "j1"
    # A retry writing the same version never rewrites it in place.
    store.write_version("notes", 1, make_adapter(tmp_path / "b", b"other"), {"job_id": "j2"})
    assert (tmp_path / "store" / "notes" / "v1" / "adapter_model.safetensors").read_bytes() == b"weights"
    assert store.read_metadata(target)["job_id"] == "j1"
    assert not list((tmp_path / "store" / ".staging").iterdir())


def test_rejects_non_adapter_directory(tmp_path):
    store = AdapterStore(tmp_path / "store")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        store.write_version("notes", 1, tmp_path / "empty", {})
    assert not store.has("notes", 1)
