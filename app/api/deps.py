"""Named FastAPI dependencies: handlers read `engine: EngineDep, principal: InferPrincipal`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from app.auth import Principal, authenticate
from app.config import Scope, Settings
from app.engine import Engine
from app.errors import EngineUnavailable
from app.registry.db import get_sessionmaker


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None or not engine.ready:
        raise EngineUnavailable("The inference engine is not ready yet.")
    return engine


def get_session(request: Request) -> Iterator[Session]:
    session = get_sessionmaker(request.app.state.settings.sqlalchemy_url)()
    try:
        yield session
    finally:
        session.close()


def get_redis(request: Request) -> Any:
    return request.app.state.redis


def get_store(request: Request) -> Any:
    return request.app.state.store


def get_principal(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """The caller, as app.middleware.AuthMiddleware authenticated it before the body was read."""
    principal = getattr(request.state, "principal", None)
    if principal is None:  # a route the middleware leaves open still gets the same check, never a pass
        principal = authenticate(request.app.state.settings, authorization)
    return principal


def _scoped(scope: Scope):
    def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(scope)
        return principal

    return dependency


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
EngineDep = Annotated[Engine, Depends(get_engine)]
SessionDep = Annotated[Session, Depends(get_session)]
RedisDep = Annotated[Any, Depends(get_redis)]
StoreDep = Annotated[Any, Depends(get_store)]
InferPrincipal = Annotated[Principal, Depends(_scoped(Scope.infer))]
LearnPrincipal = Annotated[Principal, Depends(_scoped(Scope.learn))]
AdminPrincipal = Annotated[Principal, Depends(_scoped(Scope.admin))]
AnyPrincipal = Annotated[Principal, Depends(get_principal)]
