"""Re-packing groups related documents into shards of at most K, deterministically."""

from __future__ import annotations

from app.knowledge.packing import PackItem, pack

DOCS = [
    PackItem(1, "Quellbrook Ferry", "The Quellbrook Ferry crosses Lake Tarrow. It was built by Orsk Yards."),
    PackItem(2, "Saltren Festival", "The Saltren Festival is held in Port Halden every August."),
    PackItem(3, "Orsk Yards", "Orsk Yards builds ferries on Lake Tarrow, including the Quellbrook Ferry."),
    PackItem(4, "Merrow Glacier", "The Merrow Glacier feeds the Tesli River."),
    PackItem(5, "Port Halden", "Port Halden is a harbour town that hosts the Saltren Festival."),
]


def test_related_documents_share_a_shard() -> None:
    groups = pack(DOCS, 2)
    assert [1, 3] in groups and [2, 5] in groups
    assert sorted(i for g in groups for i in g) == [1, 2, 3, 4, 5]


def test_capacity_is_never_exceeded_and_one_means_one() -> None:
    assert all(len(g) <= 3 for g in pack(DOCS, 3))
    assert pack(DOCS, 1) == [[1], [2], [3], [4], [5]]


def test_the_same_documents_pack_the_same_way_in_any_order() -> None:
    assert pack(list(reversed(DOCS)), 2) == pack(DOCS, 2)


def test_unrelated_documents_fill_shards_in_id_order() -> None:
    loners = [PackItem(i, f"Name{i}", f"Zzq{i} wrote about topic{i}.") for i in range(1, 6)]
    assert pack(loners, 2) == [[1, 2], [3, 4], [5]]
