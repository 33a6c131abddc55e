"""Every error leaves in OpenAI's shape: the exception handlers the app factory installs."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import SealError, error_body

logger = logging.getLogger(__name__)

# A validation error echoes the offending input; a 10 MB prompt would come back whole.
MAX_ECHOED_INPUT_CHARS = 200


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves in OpenAI's shape; nothing a client sends produces a bare 500."""

    @app.exception_handler(SealError)
    async def seal_error(_: Request, exc: SealError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return JSONResponse(error_body(exc.message, exc.type, param=exc.param, code=exc.code), exc.status_code,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        # The first element says where the field was (body, query, path, header); OpenAI's param is the field.
        loc = [str(p) for p in first.get("loc", ())[1:]]
        param = ".".join(loc) or None
        if first.get("type") == "json_invalid":
            param = None  # the location is a byte offset, not a field
            message = f"Malformed JSON body: {first.get('ctx', {}).get('error', 'could not parse')}"
        else:
            message = f"{param + ': ' if param else ''}{first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message[:MAX_ECHOED_INPUT_CHARS * 2], "invalid_request_error", param=param),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unhandled(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse(error_body("Internal server error.", "internal_error"), status_code=500)


