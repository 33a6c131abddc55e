"""Adapter keys: every tenant's names land in its own namespace; admins address keys directly."""

from __future__ import annotations

import re

import pytest

from app.auth import OPEN_ACCESS, Principal
from app.config import Scope
from app.tenancy import ADAPTER_NAME_PATTERN, adapter_key, key_for, public_name, tenant_prefix

ACME = Principal(tenant="acme", scopes=frozenset({Scope.infer, Scope.learn}))
ADMIN = Principal(tenant="ops", scopes=frozenset({Scope.admin}))


def test_a_tenants_names_are_its_own():
    assert key_for(ACME, "kb") == "acme~kb" == adapter_key("acme", "kb")
    assert public_name(ACME, "acme~kb") == "kb"
    assert key_for(ACME, "globex~kb") is None  # another namespace addresses nothing


@pytest.mark.parametrize("principal", [ADMIN, OPEN_ACCESS])
def test_admins_and_the_open_mode_address_keys(principal):
    assert key_for(principal, "acme~kb") == "acme~kb"
    assert key_for(principal, "kb") == "kb"
    assert public_name(principal, "acme~kb") == "acme~kb"


@pytest.mark.parametrize("tenant", ["Acme Corp", "a" * 40, "tenant/with/slashes", "ünïcode"])
def test_unreadable_tenants_get_a_stable_digest(tenant):
    prefix = tenant_prefix(tenant)
    assert prefix == tenant_prefix(tenant) and re.fullmatch(r"t[0-9a-f]{24}", prefix)
    assert re.fullmatch(ADAPTER_NAME_PATTERN, adapter_key(tenant, "kb"))


def test_keys_fit_the_name_pattern_and_column():
    key = adapter_key("a" * 32, "n" * 63)
    assert re.fullmatch(ADAPTER_NAME_PATTERN, key) and len(key) <= 128
    assert re.fullmatch(ADAPTER_NAME_PATTERN, adapter_key("t" + "0" * 24, "kb"))
