"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import EngineDep, InferPrincipal, SettingsDep
from app.api.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from app.knowledge.catalog import ANSWER_FROM_HEADER, AnswerFrom
from app.serving import serve_chat, serve_completion
from app.utils import with_cancellation

router = APIRouter(prefix="/v1", tags=["completions"])


ROUTE_HEADER = "seal-route"  # what answered a knowledge base's request: `kb/s3@v2`, `context:17`, `pending:17`, `base`


def _respond(result, request: Request, response: Response):  # noqa: ANN001, ANN202
    route = getattr(request.state, "seal_route", None)
    if isinstance(result, (CompletionResponse, ChatCompletionResponse)):
        if route:
            response.headers[ROUTE_HEADER] = route
        return result
    headers = {"Cache-Control": "no-cache", **({ROUTE_HEADER: route} if route else {})}
    return StreamingResponse(result, media_type="text/event-stream", headers=headers)


# What answers a knowledge base's question: `auto` (default), `weights` or `context` (app/knowledge/catalog.py).
AnswerFromHeader = Annotated[str | None, Header(alias=ANSWER_FROM_HEADER, description=(
    "Knowledge bases: `auto` (default), `weights` (the routed document's shard alone; 409 `not_learned` while it "
    "has none) or `context` (the base model reading the routed document)."))]


@router.post("/completions", response_model=CompletionResponse)
@with_cancellation
async def create_completion(
    body: CompletionRequest, request: Request, response: Response, engine: EngineDep, principal: InferPrincipal,
    settings: SettingsDep, answer_from: AnswerFromHeader = None,
):
    """Complete a prompt (OpenAI legacy completions), optionally streamed as SSE."""
    result = await serve_completion(engine, body, principal, settings.sqlalchemy_url, request.state,
                                    request.app.state.kbs, AnswerFrom.parse(answer_from))
    return _respond(result, request, response)


@router.post("/chat/completions", response_model=ChatCompletionResponse)
@with_cancellation
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, response: Response, engine: EngineDep, principal: InferPrincipal,
    settings: SettingsDep, answer_from: AnswerFromHeader = None,
):
    """Answer a conversation (OpenAI chat completions), optionally streamed as SSE. A knowledge base's
    answer carries a `seal-route` header naming what answered: a shard version (`kb/s3@v2`), the base
    model reading a document (`pending:17`; `context:17`: a rejected one, or a learned one
    its weights answer worse), or `base`."""
    result = await serve_chat(engine, body, principal, settings.sqlalchemy_url, request.state, request.app.state.kbs,
                              AnswerFrom.parse(answer_from))
    return _respond(result, request, response)
