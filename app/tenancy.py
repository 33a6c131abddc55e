"""Per-tenant adapter namespaces: the one place a public adapter name becomes a registry key.

Two tenants may each call an adapter `kb`. Below the API (registry, store, queue, worker, engine,
events) an adapter is known only by its *key*: `<tenant>~<name>` for a tenant's adapter, the bare
name for an operator's (tenantless) one. A tenant's key can only be formed from that tenant's
credentials, so one tenant can neither address, squat nor detect another's adapter: every name
it sends resolves inside its own namespace, where a foreign adapter simply is not.

Admins and the open mode (no API keys) address keys directly; they see the whole registry.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.auth import Principal

SEP = "~"
NAME = r"[a-z0-9][a-z0-9._-]{0,62}"
# What a client may send: a public name; admins may also send a tenant's key.
ADAPTER_NAME_PATTERN = rf"^([a-z0-9][a-z0-9._-]{{0,39}}{SEP})?{NAME}$"
_READABLE_TENANT = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def tenant_prefix(tenant: str) -> str:
    """A path- and URL-safe stand-in for a tenant: its own name when that is one, else a digest."""
    if _READABLE_TENANT.fullmatch(tenant):
        return tenant
    return "t" + hashlib.sha256(tenant.encode()).hexdigest()[:24]


def adapter_key(tenant: str | None, name: str) -> str:
    """The registry key of tenant `tenant`'s adapter `name` (tenantless: the name itself)."""
    return f"{tenant_prefix(tenant)}{SEP}{name}" if tenant else name


def key_for(principal: Principal, name: str) -> str | None:
    """The key `name` addresses for this caller, or None when it can address nothing.

    A tenant's names always land in its own namespace; a name that already carries a namespace
    is someone else's and addresses nothing (the caller then gets the same 404 as for a name
    that does not exist).
    """
    if _global(principal):
        return name
    if SEP in name:
        return None
    return adapter_key(principal.tenant, name)


def public_name(principal: Principal, key: str) -> str:
    """How this caller sees a key: its own adapters without the namespace, shared ones as they are."""
    if _global(principal):
        return key
    return key.removeprefix(tenant_prefix(principal.tenant or "") + SEP)


def is_tenant_key(key: str) -> bool:
    return SEP in key


def _global(principal: Principal) -> bool:
    return principal.is_admin or principal.tenant is None
