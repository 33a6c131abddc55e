"""One error hierarchy, rendered in one place in OpenAI's error shape.

The OpenAI SDKs parse exactly `{"error": {"message", "type", "param", "code"}}` and map the
HTTP status to their exception classes, so every failure leaves through `error_body`.
"""

from __future__ import annotations

import re
from typing import Any


class SealError(Exception):
    """Base for errors that reach a client."""

    status_code = 500
    type = "internal_error"
    retry_after: int | None = None  # seconds, sent as `Retry-After` (429 and 503: when trying again may work)

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if retry_after is not None:
            self.retry_after = max(1, int(retry_after))


class InvalidRequest(SealError):
    status_code = 400
    type = "invalid_request_error"


class Unauthorized(SealError):
    status_code = 401
    type = "authentication_error"


class Forbidden(SealError):
    status_code = 403
    type = "permission_error"


class NotFound(SealError):
    status_code = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    """Unknown model, or one that belongs to another tenant (404 either way: names must not leak)."""

    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist.", param="model", code="model_not_found")


class Conflict(SealError):
    status_code = 409
    type = "conflict_error"


class PayloadTooLarge(SealError):
    status_code = 413
    type = "invalid_request_error"


class RateLimited(SealError):
    status_code = 429
    type = "rate_limit_error"
    retry_after = 30  # about the wait for a learn to finish; a quota that knows better says so


class EngineUnavailable(SealError):
    status_code = 503
    type = "service_unavailable"
    retry_after = 10  # the engine is starting or restarting; the supervisor brings it back in seconds


# Paths and memory addresses say nothing useful to a client and leak the deployment layout.
_PATH = re.compile(r"(/[\w.\-]+){2,}")
_ADDR = re.compile(r"0x[0-9a-fA-F]{6,}")


def sanitize_message(message: str) -> str:
    return _ADDR.sub("0x…", _PATH.sub("<path>", message))


def _encodable(text: str | None) -> str | None:
    # A message or param may echo client text holding a lone surrogate, which the UTF-8 JSON
    # response cannot encode: rendering the error would itself fail with a 500.
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if text is not None else None


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": sanitize_message(_encodable(message)), "type": type_, "param": _encodable(param),
                      "code": code}}
