"""Adapter store: immutable version directories with self-describing metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.config import Settings
from app.store import AdapterStore, S3AdapterStore, open_store


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


# --- S3 (a real S3 HTTP endpoint: moto's server, in a thread) --------------------------------------


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_endpoint, tmp_path, monkeypatch):
    import uuid

    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    bucket = f"adapters-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    return Settings(data_dir=tmp_path / "data", adapter_store_url=f"s3://{bucket}/prod",
                    s3_endpoint_url=s3_endpoint)


def test_store_is_chosen_by_url(tmp_path, s3_settings):
    assert isinstance(open_store(Settings(data_dir=tmp_path)), AdapterStore)
    assert open_store(Settings(data_dir=tmp_path)).root == tmp_path / "adapters"
    assert open_store(Settings(data_dir=tmp_path, adapter_store_url=f"file://{tmp_path}/s")).root == tmp_path / "s"
    assert open_store(Settings(data_dir=tmp_path, adapter_store_url=str(tmp_path / "p"))).root == tmp_path / "p"
    s3 = open_store(s3_settings)
    assert isinstance(s3, S3AdapterStore)
    assert s3.path_for("notes", 3) == f"{s3_settings.adapter_store_url}/notes/v3"
    assert s3.cache_dir == s3_settings.data_dir / "adapter-cache"
    with pytest.raises(ValueError, match="unsupported adapter store URL"):
        open_store(Settings(data_dir=tmp_path, adapter_store_url="gs://bucket/x"))


def test_s3_versions_are_immutable_and_cached_locally_once(tmp_path, s3_settings):
    store = open_store(s3_settings)
    url = store.write_version("notes", 1, make_adapter(tmp_path / "a"), {"job_id": "j1"})
    assert url == f"{s3_settings.adapter_store_url}/notes/v1"
    assert store.has("notes", 1) and not store.has("notes", 2)
    assert store.read_metadata(url)["job_id"] == "j1"
    # A retry never rewrites a finished version.
    store.write_version("notes", 1, make_adapter(tmp_path / "b", b"other"), {"job_id": "j2"})
    assert store.read_metadata(url)["job_id"] == "j1"

    # A second process (its own store object and cache dir) reads it through its local cache.
    reader = open_store(s3_settings.model_copy(update={"adapter_cache_dir": tmp_path / "cache2"}))
    local = reader.local_path("notes", 1)
    assert local.startswith(str(tmp_path / "cache2")) and local.endswith("/notes/v1")
    assert (Path(local) / "adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((Path(local) / "seal.json").read_text())["job_id"] == "j1"
    assert reader.localize(url) == local == reader.localize(local)
    assert reader.read_metadata(local)["job_id"] == "j1"
    assert not list((tmp_path / "cache2" / ".staging").iterdir())
    # Cached: later calls do not touch S3 at all.
    reader.fs = None
    assert reader.local_path("notes", 1) == local


def test_s3_local_path_concurrent_downloads_agree(tmp_path, s3_settings):
    from concurrent.futures import ThreadPoolExecutor

    open_store(s3_settings).write_version("notes", 1, make_adapter(tmp_path / "a"), {})
    readers = [open_store(s3_settings.model_copy(update={"adapter_cache_dir": tmp_path / "shared"}))
               for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda r: r.local_path("notes", 1), readers))
    (path,) = paths
    assert (Path(path) / "adapter_config.json").exists()
    assert not list((tmp_path / "shared" / ".staging").iterdir())


def test_s3_unfinished_version_is_not_served(tmp_path, s3_settings):
    store = open_store(s3_settings)
    # Weights uploaded, seal.json (the completion marker) not: a writer died mid-upload.
    store.fs.pipe_file(f"{store.path_for('notes', 1)}/adapter_config.json", b"{}")
    assert not store.has("notes", 1)
    with pytest.raises(FileNotFoundError, match="not finished"):
        store.local_path("notes", 1)
    # The retry completes it.
    store.write_version("notes", 1, make_adapter(tmp_path / "a"), {"job_id": "j1"})
    assert store.read_metadata(store.local_path("notes", 1))["job_id"] == "j1"
