"""Model-name parsing used for routing (the engine itself is exercised through the API tests)."""

from __future__ import annotations

import pytest

from app.engine import parse_model_name, version_name


@pytest.mark.parametrize("model, expected", [
    ("notes", ("notes", None)),
    ("notes@v3", ("notes", 3)),
    ("team.notes-2@v10", ("team.notes-2", 10)),
    ("notes@vx", ("notes@vx", None)),
    ("@v3", ("@v3", None)),
])
def test_parse_model_name(model, expected):
    assert parse_model_name(model) == expected


def test_version_name_round_trips():
    assert parse_model_name(version_name("notes", 7)) == ("notes", 7)
