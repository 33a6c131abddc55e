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
    if status in (429, 503):  # a client told to wait is told how long
        assert int(response.headers["retry-after"]) > 0, response.headers
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


COMPLETIONS = "/v1/completions"


def post_raw(client, path: str, raw: str):
    """Send JSON text as written: `"\\udc00"` escapes reach the server's parser unchanged."""
    return client.post(path, content=raw.encode(), headers={"content-type": "application/json"})


@pytest.mark.parametrize("prompt", [[99999999, 5], [-1, 5], [5, 10**30]])
def test_prompt_token_ids_outside_vocabulary(stack, prompt):
    with stack.client() as client:
        assert_error(client.post(COMPLETIONS, json={"model": BASE_MODEL, "prompt": prompt}), 400, param="prompt")


@pytest.mark.parametrize("path, raw, param", [
    (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": "\\udc00"}]}', "messages.0.content"),
    (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": [{"type": "text", "text": "a\\ud800"}]}]}',
     "messages.0.content"),
    (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": "hi", "name": "\\udfff"}]}', "messages.0.name"),
    (CHAT, '{"model": "%s\\udc00", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udc00"]}', "stop"),
    (CHAT, '{"model": "%s", "messages": [{"role": "user", "content": "hi"}], "user": "\\udc00"}', "user"),
    (COMPLETIONS, '{"model": "%s", "prompt": "\\udc00"}', "prompt"),
    (COMPLETIONS, '{"model": "%s", "prompt": ["\\udc00"]}', "prompt"),
    (COMPLETIONS, '{"model": "%s", "prompt": "hi", "stop": "\\ud83d"}', "stop"),
])
def test_lone_surrogates_are_400(stack, path, raw, param):
    with stack.client() as client:
        error = assert_error(post_raw(client, path, raw % BASE_MODEL), 400, param=param)
        # pydantic itself refuses a surrogate in a plain `str` field; our check covers unions and lists
        assert "surrogate" in error["message"] or "unicode" in error["message"]


@pytest.mark.parametrize("path, body, param", [
    (CHAT, {"model": BASE_MODEL, "messages": MSG, "seed": 10**20}, "seed"),
    (CHAT, {"model": BASE_MODEL, "messages": MSG, "max_tokens": 10**20}, "max_tokens"),
    (CHAT, {"model": BASE_MODEL, "messages": MSG, "max_completion_tokens": 10**20}, "max_completion_tokens"),
    (CHAT, {"model": BASE_MODEL, "messages": MSG, "n": 10**20}, "n"),
    (CHAT, {"model": BASE_MODEL, "messages": MSG, "top_logprobs": 10**20}, "top_logprobs"),
    (COMPLETIONS, {"model": BASE_MODEL, "prompt": "hi", "logprobs": 10**20}, "logprobs"),
    (COMPLETIONS, {"model": BASE_MODEL, "prompt": "hi", "best_of": 10**20}, "best_of"),
    ("/v1/adapters/anything/rollback", {"version": 10**20}, "version"),
])
def test_integers_beyond_64_bits_are_400(stack, path, body, param):
    with stack.client() as client:
        assert_error(client.post(path, json=body), 400, param=param)


@pytest.mark.parametrize("query, param", [("offset=99999999999999999999", "offset"), ("limit=99999999999999999999", "limit")])
def test_query_integers_beyond_64_bits_are_400(stack, query, param):
    with stack.client() as client:
        assert_error(client.get(f"/v1/learn?{query}"), 400, param=param)


def test_request_id_is_echoed_only_when_safe(stack):
    with stack.client() as client:
        assert client.get("/v1/models", headers={"X-Request-Id": "req-42.a:b"}).headers["x-request-id"] == "req-42.a:b"
        for unsafe in (b"\xff\xfe-not-utf8", "café".encode(), b"has space", b"x" * 65):
            r = client.get("/v1/models", headers={"X-Request-Id": unsafe})
            assert r.status_code == 200
            echoed = r.headers["x-request-id"]
            assert echoed.encode() != unsafe and len(echoed) == 32 and echoed.isalnum()


@pytest.mark.parametrize("document, param", [
    ({"text": "a\x00b"}, "documents.0.text"),
    ({"text": "ok", "title": "t\x00"}, "documents.0.title"),
    ({"text": "ok", "probes": [{"question": "q\x00?", "answer": "a"}]}, "documents.0.probes.0.question"),
    ({"text": "ok", "probes": [{"question": "q?", "answer": "\x00a"}]}, "documents.0.probes.0.answer"),
])
def test_learn_refuses_nul(stack, document, param):
    with stack.client() as client:
        assert_error(client.post("/v1/learn", json={"adapter": "nul-check", "documents": [document]}), 400, param=param)


def test_learn_refuses_lone_surrogates(stack):
    with stack.client() as client:
        raw = '{"adapter": "surrogate-check", "documents": [{"text": "ok", "title": "\\udc00"}]}'
        assert_error(post_raw(client, "/v1/learn", raw), 400, param="documents.0.title")


def test_oversized_chunked_body_is_413(stack):
    def chunks():  # a generator body goes out chunked, without Content-Length
        yield b'{"model": "x", "messages": [{"role": "user", "content": "'
        for _ in range(17):
            yield b"x" * (1024 * 1024)
        yield b'"}]}'

    with stack.client() as client:
        r = client.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in r.request.headers
        assert_error(r, 413, code="request_too_large")
        small = client.post(CHAT, content=iter([b'{"model": "%s", ' % BASE_MODEL.encode(),
                                                b'"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}']),
                            headers={"content-type": "application/json"})
        assert small.status_code == 200, small.text  # a chunked body under the limit is replayed whole


@pytest.mark.parametrize("extra, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, "tools"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format"),
    ({"logit_bias": {"-5": 1}}, "logit_bias"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"99999999": 1}}, "logit_bias"),
])
def test_unsupported_fields_are_refused_not_ignored(stack, extra, param):
    with stack.client() as client:
        error = assert_error(client.post(CHAT, json={"model": BASE_MODEL, "messages": MSG, **extra}), 400, param=param)
        assert param.split(".")[0] in error["message"]


@pytest.mark.parametrize("extra, param", [
    ({"logprobs": 1, "echo": True}, "logprobs"), ({"logprobs": 6}, "logprobs"), ({"suffix": "end"}, "suffix"),
    ({"best_of": 3}, "best_of"), ({"logit_bias": {"49152": 1}}, "logit_bias"),
])
def test_completions_unsupported_fields_are_refused(stack, extra, param):
    with stack.client() as client:
        assert_error(client.post(COMPLETIONS, json={"model": BASE_MODEL, "prompt": "hi", **extra}), 400, param=param)


def test_off_values_of_refused_fields_still_work(stack):
    reply = stack.openai().chat.completions.create(
        model=BASE_MODEL, messages=MSG, max_tokens=2, temperature=0, logprobs=False, top_logprobs=0, logit_bias={},
        response_format={"type": "text"}, tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="none",
        frequency_penalty=0, presence_penalty=0)
    assert reply.choices[0].message.content is not None
    with stack.client() as client:
        r = client.post(COMPLETIONS, json={"model": BASE_MODEL, "prompt": "hi", "max_tokens": 1, "logprobs": None,
                                           "best_of": 1, "suffix": None, "echo": False})
        assert r.status_code == 200, r.text


def test_logit_bias_is_honoured(stack):
    from tokenizers import Tokenizer

    from tests.conftest import MODEL_DIR

    paris = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json")).encode(" Paris", add_special_tokens=False).ids[0]
    text = stack.openai().completions.create(model=BASE_MODEL, prompt="My favourite colour is", max_tokens=3,
                                             temperature=0, logit_bias={str(paris): 100}).choices[0].text
    assert text == " Paris" * 3


def test_json_mode_through_the_sdk(stack):
    import json

    client = stack.openai()
    reply = client.chat.completions.create(
        model=BASE_MODEL, temperature=0, max_tokens=60, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Describe a cat named Tom, aged 3, as JSON with keys name and age."}])
    assert isinstance(json.loads(reply.choices[0].message.content), dict)
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model=BASE_MODEL, temperature=0, max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "cat", "schema": schema}},
        messages=[{"role": "user", "content": "Describe a cat named Tom, aged 3."}])
    cat = json.loads(reply.choices[0].message.content)
    assert set(cat) == {"name", "age"} and isinstance(cat["age"], int)


@pytest.mark.parametrize("path", [
    "/v1/learn?adapter=%00", "/v1/adapters/kb%00x", "/v1/learn/%00", "/v1/learn/%ff%fe", "/v1/models/a%00",
])
def test_url_with_nul_or_bad_utf8_is_400(stack, path):
    # PostgreSQL refuses NUL in text: such a URL must not reach a registry query.
    with stack.client() as client:
        assert_error(client.get(path), 400, code="invalid_url")
