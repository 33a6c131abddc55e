"""Bad input gets the right 4xx in OpenAI's error shape, never a 500."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import BASE_MODEL

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def assert_error(response, status: int, *, param: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize("body, status, param", [
    ({"model": "no-such-model", "messages": MSG}, 404, "model"),
    ({"model": "no-such-model@v3", "messages": MSG}, 404, "model"),
    ({"messages": MSG}, 400, "model"),
    ({"model": BASE_MODEL, "messages": []}, 400, "messages"),
    ({"model": BASE_MODEL, "messages": "hello"}, 400, "messages"),
    ({"model": BASE_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ({"model": BASE_MODEL, "messages": MSG, "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": BASE_MODEL, "messages": MSG, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": BASE_MODEL, "messages": MSG, "temperature": 9}, 400, "temperature"),
    ({"model": BASE_MODEL, "messages": MSG, "n": 1000}, 400, "n"),
    ({"model": BASE_MODEL, "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": BASE_MODEL, "messages": MSG, "max_tokens": 100_000}, 400, "max_tokens"),
    ({"model": BASE_MODEL, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, None),
])
def test_chat_bad_input(stack, body, status, param):
    with stack.client() as client:
        assert_error(client.post(CHAT, json=body), status, param=param)


def test_context_window_exceeded(stack):
    with stack.client() as client:
        long_prompt = "word " * 3000  # > 2048 tokens
        error = assert_error(client.post(CHAT, json={"model": BASE_MODEL, "messages": [{"role": "user", "content": long_prompt}]}), 400)
        assert error["code"] == "context_length_exceeded"
        assert_error(client.post("/v1/completions", json={"model": BASE_MODEL, "prompt": "hi", "max_tokens": 5000}),
                     400, code="context_length_exceeded")


def test_malformed_and_non_json(stack):
    with stack.client() as client:
        error = assert_error(client.post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400)
        assert "Malformed JSON" in error["message"]
        assert_error(client.post(CHAT, content=b"model=x", headers={"content-type": "text/plain"}), 400)
        assert_error(client.post("/v1/completions", json={"model": BASE_MODEL, "prompt": ""}), 400, param="prompt")
        assert_error(client.post("/v1/completions", json={"model": BASE_MODEL, "prompt": []}), 400, param="prompt")


def test_oversized_body_is_413(stack):
    with stack.client() as client:
        huge = "x" * (17 * 1024 * 1024)
        assert_error(client.post(CHAT, json={"model": BASE_MODEL, "messages": [{"role": "user", "content": huge}]}), 413,
                     code="request_too_large")


def test_unknown_route_and_method(stack):
    with stack.client() as client:
        assert_error(client.get("/v1/nothing-here"), 404)
        assert_error(client.get(CHAT), 405)


def test_sdk_maps_errors_to_exceptions(stack):
    client = stack.openai()
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=MSG)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=BASE_MODEL, messages=MSG, max_tokens=10**6)
