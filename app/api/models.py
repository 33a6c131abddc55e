"""GET /v1/models: the base model first, then every adapter the caller may use."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from app.api.deps import EngineDep, InferPrincipal, SettingsDep
from app.api.schemas import ModelCard, ModelList
from app.catalog import visible_models
from app.errors import ModelNotFound
from app.knowledge.catalog import visible_knowledge_bases

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(engine: EngineDep, principal: InferPrincipal, settings: SettingsDep) -> ModelList:
    """List servable models: the base model id, then adapter names (each at its current version),
    then knowledge bases."""
    cards = [ModelCard(id=engine.base_model_id, created=engine.created, owned_by="seal", root=engine.base_model_id)]
    for name, loaded in visible_models(engine, principal):
        # The store path is deployment layout, and a tenant's owner field is the tenant itself.
        cards.append(ModelCard(
            id=name, created=int(loaded.loaded_at), owned_by=loaded.tenant or "seal",
            root=name, parent=engine.base_model_id, version=loaded.version,
        ))
    for name, version, owner, created in await asyncio.to_thread(visible_knowledge_bases, settings.sqlalchemy_url,
                                                                 principal):
        cards.append(ModelCard(id=name, created=int(created), owned_by=owner or "seal", root=name,
                               parent=engine.base_model_id, version=version))
    return ModelList(data=cards)


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, engine: EngineDep, principal: InferPrincipal, settings: SettingsDep) -> ModelCard:
    """Describe one model by id (base, adapter name, or `name@vN` when loaded)."""
    for card in (await list_models(engine, principal, settings)).data:
        if card.id == model_id:
            return card
    raise ModelNotFound(model_id)
