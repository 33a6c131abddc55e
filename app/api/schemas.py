"""OpenAI wire models for completions, chat completions and models.

Requests use `extra="allow"`: the OpenAI SDKs send fields we do not implement (e.g.
`frequency_penalty=0`), and rejecting them would break ordinary clients. Ignored fields are
logged, as vLLM does. A field that would change the reply is never ignored: it is declared here
and either honoured (`response_format`, `logit_bias`, `logprobs`) or refused with a 400 naming it.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.api.limits import MAX_INT32, MAX_INT64, MIN_INT64, check_text
from app.errors import InvalidRequest

logger = logging.getLogger(__name__)

# OpenAI's documented defaults, used when neither the request nor the server sets a value.
OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "n": 1}
MAX_N = 16
MAX_STOP = 4
# OpenAI's own limits on logit_bias: at most 300 entries, each in [-100, 100].
MAX_LOGIT_BIAS = 300


class OpenAIModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    def log_ignored_fields(self) -> None:
        if self.model_extra:
            logger.debug("ignoring unsupported request fields: %s", sorted(self.model_extra))


class StreamOptions(BaseModel):
    include_usage: bool = False


class JsonSchemaFormat(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    # `schema` would shadow BaseModel.schema(), hence the alias.
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def check_schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type 'json_schema' needs a 'json_schema' object")
        return self


class SamplingFields(OpenAIModel):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_INT32)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=MIN_INT64, le=MAX_INT64)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Keys are token ids as strings (JSON object keys); the vocabulary bound is checked in serving.
    logit_bias: dict[str, float] | None = None

    @field_validator("model", "user")
    @classmethod
    def check_encodable(cls, v: str | None) -> str | None:
        return check_text(v)

    @field_validator("stop")
    @classmethod
    def check_stop(cls, v: str | list[str] | None) -> list[str] | None:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else v
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(not s for s in stops):
            raise ValueError("stop sequences must be non-empty")
        return check_text(stops)

    @field_validator("logit_bias")
    @classmethod
    def check_logit_bias(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if not v:
            return None  # {} means no bias, as in OpenAI's API
        if len(v) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} token biases are allowed")
        for key, bias in v.items():
            if not key.isascii() or not key.isdigit() or int(key) > MAX_INT32:
                raise ValueError(f"keys must be token ids (non-negative integers), got {key[:20]!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"bias for token {key} must be between -100 and 100, got {bias}")
        return v

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def token_ids_in_request(self) -> dict[str, list[int]]:
        """Token ids the client sent, by field, for the vocabulary check the engine's tokenizer makes."""
        return {"logit_bias": [int(k) for k in self.logit_bias]} if self.logit_bias else {}

    def structured_outputs(self) -> Any:
        """vLLM's constraint for this request's output format, or None for free text."""
        return None

    def logprobs_wanted(self) -> int | None:
        """How many alternatives per token to return log probabilities for; None when none are wanted."""
        return None

    def to_sampling_params(self, *, max_tokens: int, stream: bool) -> Any:
        """Build vLLM SamplingParams: the request's value, else OpenAI's default."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=self.n,
            temperature=self.temperature if self.temperature is not None else OPENAI_DEFAULTS["temperature"],
            top_p=self.top_p if self.top_p is not None else OPENAI_DEFAULTS["top_p"],
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            max_tokens=max_tokens,
            stop=self.stop,
            seed=self.seed,
            logit_bias={int(k): b for k, b in self.logit_bias.items()} if self.logit_bias else None,
            logprobs=self.logprobs_wanted(),
            structured_outputs=self.structured_outputs(),
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        )


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    @field_validator("prompt")
    @classmethod
    def check_prompt(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be empty")
            if all(isinstance(x, str) for x in v):
                if len(v) != 1:
                    raise ValueError("batched prompts are not supported; send one prompt per request")
                v = v[0]
        if isinstance(v, str) and not v:
            raise ValueError("prompt must not be empty")
        return check_text(v)

    @model_validator(mode="after")
    def check_unsupported(self) -> CompletionRequest:
        if self.logprobs is not None and self.echo:
            # OpenAI would add the prompt's log probabilities, which we do not compute.
            raise InvalidRequest("logprobs: log probabilities of an echoed prompt are not supported; send echo=false "
                                 "or omit logprobs.", param="logprobs", code="unsupported_parameter")
        if self.suffix:
            raise InvalidRequest("suffix: insertion (suffix) is not supported; omit it.", param="suffix",
                                 code="unsupported_parameter")
        if self.best_of is not None and self.best_of != self.n:
            raise InvalidRequest("best_of: choosing the best of several samples is not supported; omit best_of.",
                                 param="best_of", code="unsupported_parameter")
        return self

    def logprobs_wanted(self) -> int | None:
        return self.logprobs

    def token_ids_in_request(self) -> dict[str, list[int]]:
        ids = super().token_ids_in_request()
        if isinstance(self.prompt, list):
            ids["prompt"] = self.prompt
        return ids


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def check_name(cls, v: str | None) -> str | None:
        return check_text(v)

    @field_validator("content")
    @classmethod
    def flatten_text_parts(cls, v: str | list[dict[str, Any]] | None) -> str | None:
        # The SDKs may send content as [{"type": "text", "text": ...}]; we serve text only.
        if isinstance(v, list):
            texts = []
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts are supported")
                texts.append(part["text"])
            v = "".join(texts)
        return check_text(v)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    response_format: ResponseFormat | None = None
    # We do no tool calling: a request that offers tools is refused, not answered as if it had none.
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None  # the pre-tools spelling of the same thing
    function_call: str | dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @model_validator(mode="after")
    def check_unsupported(self) -> ChatCompletionRequest:
        # InvalidRequest rather than ValueError: pydantic would report a model-level error without a
        # location, and the 400's `param` must name the field the client has to change.
        no_tools = "this server does not call tools; omit it or set tool_choice to 'none'"
        refusals = (
            ("tools", bool(self.tools) and self.tool_choice != "none", no_tools),
            ("tool_choice", self.tool_choice not in (None, "none", "auto") and not self.tools,
             "tool_choice needs tools, and this server does not call tools"),
            ("functions", bool(self.functions) and self.function_call != "none", no_tools),
            ("function_call", self.function_call not in (None, "none", "auto") and not self.functions,
             "function_call needs functions, and this server does not call functions"),
            ("top_logprobs", bool(self.top_logprobs) and not self.logprobs, "top_logprobs needs logprobs=true"),
        )
        for name, refused, why in refusals:
            if refused:
                raise InvalidRequest(f"{name}: {why}.", param=name, code="unsupported_parameter")
        return self

    def logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict[str, str]]:
        # SmolLM2-style templates know only system/user/assistant; "developer" is OpenAI's new system.
        role = {"developer": "system"}
        return [{"role": role.get(m.role, m.role), "content": m.content or ""} for m in self.messages]

    def structured_outputs(self) -> Any:
        from vllm.sampling_params import StructuredOutputsParams

        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return StructuredOutputsParams(json_object=True)
        assert fmt.json_schema is not None  # check_schema_present
        # A json_schema without a schema still promises JSON; constrain to any object.
        return StructuredOutputsParams(json=fmt.json_schema.json_schema or {"type": "object"})


# --- responses ---------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class ChatTokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    version: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
