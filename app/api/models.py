"""GET /v1/models: the base model first, then every adapter the caller may use."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep, InferPrincipal
from app.api.schemas import ModelCard, ModelList
from app.catalog import visible_models
from app.errors import ModelNotFound

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models", response_model=ModelList)
async def list_models(engine: EngineDep, principal: InferPrincipal) -> ModelList:
    """List servable models: the base model id, then adapter names (each at its current version)."""
    cards = [ModelCard(id=engine.base_model_id, created=engine.created, owned_by="seal", root=engine.base_model_id)]
    for name, loaded in visible_models(engine, principal):
        # The store path is deployment layout, and a tenant's owner field is the tenant itself.
        cards.append(ModelCard(
            id=name, created=int(loaded.loaded_at), owned_by=loaded.tenant or "seal",
            root=name, parent=engine.base_model_id, version=loaded.version,
        ))
    return ModelList(data=cards)


@router.get("/models/{model_id:path}", response_model=ModelCard)
async def get_model(model_id: str, engine: EngineDep, principal: InferPrincipal) -> ModelCard:
    """Describe one model by id (base, adapter name, or `name@vN` when loaded)."""
    for card in (await list_models(engine, principal)).data:
        if card.id == model_id:
            return card
    raise ModelNotFound(model_id)
