"""OpenAI protocol ↔ engine translation for completions and chat completions.

Routers stay thin: they call `serve_completion` / `serve_chat`, which return either a
response model or an async iterator of SSE lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from app import metrics
from app.api.schemas import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    SamplingFields,
    Usage,
    new_id,
)
from app.auth import Principal
from app.catalog import resolve_route
from app.engine import Engine, Route
from app.errors import InvalidRequest, SealError, error_body
from app.knowledge.catalog import (
    ANSWER_FROM_HEADER,
    AnswerFrom,
    KnowledgeBases,
    route_request,
    with_context_messages,
    with_context_prompt,
)
from app.logprobs import chat_logprobs, completion_logprobs

logger = logging.getLogger(__name__)

SSE_DONE = "data: [DONE]\n\n"
# Non-streaming completions default to 16 tokens, as in OpenAI's legacy completions API.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


@dataclass
class Prepared:
    route: Route
    prompt_ids: list[int]
    params: Any
    request_id: str
    metric_model: str


async def _prepare(
    engine: Engine, request: SamplingFields, prompt_ids: list[int], principal: Principal, db_url: str,
    default_max_tokens: int | None, prefix: str, state: Any, route: Route | None = None,
) -> Prepared:
    request.log_ignored_fields()
    check_token_ids(engine, request.token_ids_in_request())
    route = route or await resolve_route(engine, request.model, principal, db_url)
    if route.label:
        state.seal_route = route.label
    requested = request.requested_max_tokens or default_max_tokens
    max_tokens = engine.budget_max_tokens(len(prompt_ids), requested)
    params = request.to_sampling_params(max_tokens=max_tokens, stream=request.stream)
    metric_model = route.version.adapter if route.version else engine.base_model_id
    # Request metrics (app/middleware.py) are labelled by the adapter's key, like every other series:
    # two tenants' `kb` are two adapters.
    state.model = metric_model
    return Prepared(route, prompt_ids, params, new_id(prefix), metric_model)


async def _knowledge_base(engine: Engine, kbs: KnowledgeBases | None, model: str, principal: Principal,
                          answer_from: AnswerFrom) -> Any:
    kb = None if kbs is None or model == engine.base_model_id else await kbs.resolve(model, principal)
    if kb is None and answer_from == AnswerFrom.context:
        raise InvalidRequest(f"seal-answer-from: context needs a knowledge base to read from; '{model}' is not one.",
                             param=ANSWER_FROM_HEADER, code="invalid_answer_from")
    return kb


def check_token_ids(engine: Engine, ids_by_field: dict[str, list[int]]) -> None:
    """400 for a token id outside the tokenizer's vocabulary; vLLM would refuse it only inside generate (a 500)."""
    vocab = len(engine.tokenizer)
    for field, ids in ids_by_field.items():
        bad = next((i for i in ids if not 0 <= i < vocab), None)
        if bad is not None:
            shown = bad if abs(bad) < 10**12 else f"{str(bad)[:12]}…"
            raise InvalidRequest(f"{field}: token id {shown} is outside the vocabulary (0..{vocab - 1}).",
                                 param=field)


async def serve_completion(
    engine: Engine, request: CompletionRequest, principal: Principal, db_url: str, state: Any,
    kbs: KnowledgeBases | None = None, answer_from: AnswerFrom = AnswerFrom.auto,
) -> CompletionResponse | AsyncIterator[str]:
    prompt = request.prompt
    route = None
    kb = await _knowledge_base(engine, kbs, request.model, principal, answer_from)
    if kb is not None:
        check_token_ids(engine, request.token_ids_in_request())  # before decoding them for the router
        text = prompt if isinstance(prompt, str) else engine.tokenizer.decode(prompt)
        kb_route = await route_request(engine, kb, principal, request.model, None, text, answer_from,
                                       kbs.weights_margin)
        route = kb_route.route
        if kb_route.context is not None:
            prompt = with_context_prompt(text, kb_route.context)
    prompt_ids = prompt if isinstance(prompt, list) else await engine.tokenize(prompt)
    prep = await _prepare(engine, request, prompt_ids, principal, db_url, COMPLETIONS_DEFAULT_MAX_TOKENS, "cmpl",
                          state, route)
    echo = request.prompt if (request.echo and isinstance(request.prompt, str)) else ""
    if request.stream:
        return _stream_completion(engine, prep, request, echo)
    final = await _run_to_end(engine, prep)
    top_n = request.logprobs_wanted()
    choices = [CompletionChoice(index=o.index, text=echo + o.text, finish_reason=o.finish_reason,
                                logprobs=None if top_n is None else completion_logprobs(o.token_ids, o.logprobs, top_n))
               for o in sorted(final.outputs, key=lambda o: o.index)]
    usage = _usage(final)
    _count_tokens(prep.metric_model, usage)
    return CompletionResponse(id=prep.request_id, model=request.model, choices=choices, usage=usage)


async def serve_chat(
    engine: Engine, request: ChatCompletionRequest, principal: Principal, db_url: str, state: Any,
    kbs: KnowledgeBases | None = None, answer_from: AnswerFrom = AnswerFrom.auto,
) -> ChatCompletionResponse | AsyncIterator[str]:
    messages = request.chat_messages()
    route = None
    kb = await _knowledge_base(engine, kbs, request.model, principal, answer_from)
    if kb is not None:
        kb_route = await route_request(engine, kb, principal, request.model, messages, None, answer_from,
                                       kbs.weights_margin)
        route = kb_route.route
        if kb_route.context is not None:
            messages = with_context_messages(messages, kb_route.context)
    prompt_ids = await engine.tokenize_chat(messages)
    prep = await _prepare(engine, request, prompt_ids, principal, db_url, None, "chatcmpl", state, route)
    if request.stream:
        return _stream_chat(engine, prep, request)
    final = await _run_to_end(engine, prep)
    top_n = request.logprobs_wanted()
    choices = [
        ChatChoice(index=o.index, message=ChatMessageOut(content=o.text), finish_reason=o.finish_reason,
                   logprobs=None if top_n is None else chat_logprobs(o.token_ids, o.logprobs, top_n))
        for o in sorted(final.outputs, key=lambda o: o.index)
    ]
    usage = _usage(final)
    _count_tokens(prep.metric_model, usage)
    return ChatCompletionResponse(id=prep.request_id, model=request.model, choices=choices, usage=usage)


@contextlib.contextmanager
def _engine_refusals_as_400() -> Iterator[None]:
    """vLLM validates some requests only when they reach the engine (e.g. a JSON schema it cannot compile)."""
    from vllm.exceptions import VLLMValidationError

    try:
        yield
    except VLLMValidationError as exc:
        raise InvalidRequest(str(exc), param=exc.parameter) from exc


async def _run_to_end(engine: Engine, prep: Prepared) -> Any:
    final = None
    async for out in _generate(engine, prep):
        final = out
    assert final is not None
    return final


def _usage(final: Any) -> Usage:
    prompt = len(final.prompt_token_ids or [])
    completion = sum(len(o.token_ids) for o in final.outputs)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _observe_first_token(model: str, seconds: float) -> None:
    metrics.TIME_TO_FIRST_TOKEN.labels(model=metrics.model_label(model, count=False)).observe(seconds)


def _count_tokens(model: str, usage: Usage) -> None:
    label = metrics.model_label(model, count=False)  # the request middleware counts the traffic
    metrics.TOKENS.labels(model=label, kind="prompt").inc(usage.prompt_tokens)
    metrics.TOKENS.labels(model=label, kind="completion").inc(usage.completion_tokens)


def _stream_usage(prep: Prepared, prompt_tokens: int, completion_tokens: int) -> Usage:
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    _count_tokens(prep.metric_model, usage)
    return usage


async def _generate(engine: Engine, prep: Prepared) -> AsyncIterator[Any]:
    with _engine_refusals_as_400():
        async for out in engine.generate(prep.prompt_ids, prep.params, prep.route, prep.request_id):
            yield out


def _sse(payload: Any) -> str:
    body = payload.model_dump_json(exclude_unset=False) if hasattr(payload, "model_dump_json") else json.dumps(payload)
    return f"data: {body}\n\n"


async def _stream_completion(
    engine: Engine, prep: Prepared, request: CompletionRequest, echo: str
) -> AsyncIterator[str]:
    created = int(time.time())
    completion_tokens = 0
    prompt_tokens = len(prep.prompt_ids)
    started = time.perf_counter()
    first = True
    top_n = request.logprobs_wanted()
    offsets = [0] * request.n  # logprobs.text_offset continues across a choice's chunks
    try:
        if echo:
            for i in range(request.n):
                yield _sse(_completion_chunk(prep, request, created, i, echo, None))
        async for out in _generate(engine, prep):
            for o in out.outputs:
                if first:
                    _observe_first_token(prep.metric_model, time.perf_counter() - started)
                    first = False
                completion_tokens += len(o.token_ids)
                logprobs = None
                if top_n is not None:
                    logprobs = completion_logprobs(o.token_ids, o.logprobs, top_n, offsets[o.index])
                    offsets[o.index] += sum(len(t) for t in logprobs.tokens)
                if o.text or o.finish_reason or (logprobs and logprobs.tokens):
                    yield _sse(_completion_chunk(prep, request, created, o.index, o.text, o.finish_reason, logprobs))
        usage = _stream_usage(prep, prompt_tokens, completion_tokens)
        if request.stream_options and request.stream_options.include_usage:
            yield _sse(CompletionResponse(id=prep.request_id, created=created, model=request.model, choices=[], usage=usage))
    except SealError as exc:
        yield _sse(error_body(exc.message, exc.type, code=exc.code))
    yield SSE_DONE


def _completion_chunk(prep: Prepared, request: CompletionRequest, created: int, index: int, text: str,
                      finish_reason: str | None, logprobs: Any = None) -> CompletionResponse:
    return CompletionResponse(id=prep.request_id, created=created, model=request.model,
                              choices=[CompletionChoice(index=index, text=text, finish_reason=finish_reason,
                                                        logprobs=logprobs)])


async def _stream_chat(engine: Engine, prep: Prepared, request: ChatCompletionRequest) -> AsyncIterator[str]:
    created = int(time.time())
    completion_tokens = 0
    prompt_tokens = len(prep.prompt_ids)
    started = time.perf_counter()
    first = True
    top_n = request.logprobs_wanted()

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None) -> str:
        return _sse(ChatCompletionChunk(id=prep.request_id, created=created, model=request.model,
                                        choices=choices, usage=usage))

    try:
        # OpenAI sends the role alone in the first chunk of each choice.
        yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content="")) for i in range(request.n)])
        async for out in _generate(engine, prep):
            for o in out.outputs:
                if first:
                    _observe_first_token(prep.metric_model, time.perf_counter() - started)
                    first = False
                completion_tokens += len(o.token_ids)
                logprobs = None if top_n is None else chat_logprobs(o.token_ids, o.logprobs, top_n)
                if o.text or (logprobs and logprobs.content):
                    yield chunk([ChatChunkChoice(index=o.index, delta=ChatDelta(content=o.text), logprobs=logprobs)])
                if o.finish_reason:
                    yield chunk([ChatChunkChoice(index=o.index, delta=ChatDelta(), finish_reason=o.finish_reason)])
        usage = _stream_usage(prep, prompt_tokens, completion_tokens)
        if request.stream_options and request.stream_options.include_usage:
            yield chunk([], usage)
    except SealError as exc:
        yield _sse(error_body(exc.message, exc.type, code=exc.code))
    yield SSE_DONE
