"""POST /v1/completions and /v1/chat/completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.api.deps import EngineDep, InferPrincipal, SettingsDep
from app.api.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
)
from app.serving import serve_chat, serve_completion
from app.utils import with_cancellation

router = APIRouter(prefix="/v1", tags=["completions"])


def _respond(result):  # noqa: ANN001, ANN202
    if isinstance(result, (CompletionResponse, ChatCompletionResponse)):
        return result
    return StreamingResponse(result, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/completions", response_model=CompletionResponse)
@with_cancellation
async def create_completion(
    body: CompletionRequest, request: Request, engine: EngineDep, principal: InferPrincipal, settings: SettingsDep
):
    """Complete a prompt (OpenAI legacy completions), optionally streamed as SSE."""
    return _respond(await serve_completion(engine, body, principal, settings.sqlalchemy_url, request.state))


@router.post("/chat/completions", response_model=ChatCompletionResponse)
@with_cancellation
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, engine: EngineDep, principal: InferPrincipal, settings: SettingsDep
):
    """Answer a conversation (OpenAI chat completions), optionally streamed as SSE."""
    return _respond(await serve_chat(engine, body, principal, settings.sqlalchemy_url, request.state))
