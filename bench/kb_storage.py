"""Registry storage of a knowledge base as it grows: N learns, one shard each (K = 1), published
through the real publish path into a real SQLite registry and adapter store.

    .venv/bin/python bench/kb_storage.py --sizes 10,100,1000

Prints, per N: the kb's version rows, the bytes their shard bookkeeping takes as stored now (each
version records what changed against its parent) beside what the same versions took when each one
listed its whole shard set (the format before migration 0008), the registry's size, and the time
to resolve the current version's shard set. Nothing trains: each shard is a small stand-in file.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import select  # noqa: E402

from app.knowledge.shards import assign_shards, kb_version, shard_key, shard_sets  # noqa: E402
from app.publishing import publish_shard  # noqa: E402
from app.registry import queries  # noqa: E402
from app.registry.db import migrate, session_scope  # noqa: E402
from app.registry.models import Adapter, AdapterKind, AdapterVersion  # noqa: E402
from app.store import AdapterStore  # noqa: E402

KB = "bench~kb"


class NoSubscribers:
    """The adapter-event channel with no API process listening (events are hints; none is needed here)."""

    def publish(self, channel: str, message: str) -> int:
        return 0


def grow(root: Path, sizes: list[int]) -> list[dict]:
    db = f"sqlite:///{root / 'seal.db'}"
    migrate(db)
    store, redis = AdapterStore(root / "adapters"), NoSubscribers()
    src = root / "src"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (src / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    rows, n = [], 0
    for size in sorted(sizes):
        while n < size:
            job_id = str(uuid.uuid4())
            with session_scope(db) as s:
                kb = queries.get_or_create_adapter(session=s, name=KB, tenant="bench", kind=AdapterKind.kb)
                job = queries.create_learn_job(session=s, job_id=job_id, adapter=KB, tenant="bench",
                                               documents=[{"title": f"D{n}", "text": f"Document {n}."}],
                                               options={}, idempotency_key=None, request_hash=None)
                assign_shards(s, kb, job.documents, 1)
                doc_ids = [d.id for d in job.documents]
            publish_shard(db_url=db, store=store, redis=redis, kb=KB, shard=shard_key(KB, n), tenant="bench",
                          src_dir=src, job_id=job_id, parent_version=None, document_ids=doc_ids, metrics={})
            n += 1
        rows.append(measure(db, root / "seal.db", size))
    return rows


def measure(db: str, path: Path, size: int) -> dict:
    with session_scope(db) as s:
        metrics = list(s.scalars(select(AdapterVersion.metrics).join(Adapter).where(Adapter.name == KB)))
        started = time.perf_counter()
        current = kb_version(s, KB)
        resolve_ms = 1000 * (time.perf_counter() - started)
        whole = shard_sets(s, KB)
    # Resolved along the lineage, the current set is every learn's shard at its first version.
    assert whole[current.version] == {shard_key(KB, i): 1 for i in range(size)} == {
        r.shard: r.version for r in current.shards.values()}
    stored = sum(len(json.dumps({k: m.get(k) for k in ("changed", "dropped") if k in m})) for m in metrics)
    before = sum(len(json.dumps({"shards": shards, "changed": {}})) for shards in whole.values())
    return {"documents": size, "kb_versions": len(metrics), "shards_served": len(current.shards),
            "bookkeeping_bytes": stored, "whole_set_bytes": before, "registry_bytes": logical_bytes(path),
            "resolve_ms": resolve_ms}


def logical_bytes(path: Path) -> int:
    """Pages in use x page size, WAL frames included (the file alone lags an un-checkpointed WAL)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        return con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]


def render(rows: list[dict]) -> str:
    lines = ["| Documents (learns) | kb version rows | shard bookkeeping, bytes | the same as whole sets (before) | "
             "ratio | registry, bytes | resolve the current set, ms |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['documents']:,} | {r['kb_versions']:,} | {r['bookkeeping_bytes']:,} | "
                     f"{r['whole_set_bytes']:,} | {r['whole_set_bytes'] / r['bookkeeping_bytes']:.0f}x | "
                     f"{r['registry_bytes']:,} | {r['resolve_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seal-kb-storage-") as tmp:
        started = time.perf_counter()
        rows = grow(Path(tmp), args.sizes)
    print(render(rows))
    print(f"({time.perf_counter() - started:.0f} s; each current set checked against the learns that made it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
