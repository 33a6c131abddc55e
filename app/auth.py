"""API-key authentication: bearer keys, compared as SHA-256 digests, mapped to a tenant and scopes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from app.config import ApiKey, Scope, Settings
from app.errors import Forbidden, Unauthorized


@dataclass(frozen=True)
class Principal:
    """Who is calling. `tenant=None` with every scope is the open (no keys configured) mode."""

    tenant: str | None
    scopes: frozenset[Scope]

    @property
    def is_admin(self) -> bool:
        return Scope.admin in self.scopes

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and not self.is_admin:
            raise Forbidden(f"this API key lacks the '{scope.value}' scope")

    def can_see(self, owner: str | None, *, shared: bool = False) -> bool:
        """Tenants see only their own adapters (and ones an operator shared); admins and the open mode see all.

        A tenantless adapter is an operator's: a tenant sees it only when it is marked shared.
        """
        return self.is_admin or self.tenant is None or (owner is not None and owner == self.tenant) or shared


OPEN_ACCESS = Principal(tenant=None, scopes=frozenset(Scope))


def authenticate(settings: Settings, authorization: str | None) -> Principal:
    """Resolve the Authorization header to a principal, or raise 401."""
    if not settings.auth_enabled:
        return OPEN_ACCESS
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    digest = hashlib.sha256(token.strip().encode()).hexdigest()
    match: ApiKey | None = None
    for key in settings.api_keys:
        # Check every key in constant time so timing does not reveal which prefix matched.
        if secrets.compare_digest(digest, key.sha256):
            match = key
    if match is None:
        raise Unauthorized("Incorrect API key provided.")
    return Principal(tenant=match.tenant, scopes=frozenset(match.scopes))


def generate_key() -> tuple[str, str]:
    """A new random key and its SHA-256 digest (the digest is what the settings store)."""
    key = "sk-seal-" + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()
