"""POST /v1/files/extract: the text of an uploaded document, for the console's Teach page.

The body is the file itself (what `fetch(url, {body: file})` sends); `filename` names its kind. Only
its text comes back: nothing is stored, and learning it is a separate POST /v1/learn that the
user reviews first. The body size limit (SEAL_MAX_REQUEST_BYTES) applies as everywhere."""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from app.api.deps import LearnPrincipal
from app.errors import InvalidRequest
from app.learn_files import TEXT_SUFFIXES, UnreadableFile, extract_text

router = APIRouter(prefix="/v1/files", tags=["files"])


class ExtractedText(BaseModel):
    title: str
    text: str
    characters: int


@router.post("/extract", response_model=ExtractedText)
async def extract(
    request: Request, principal: LearnPrincipal,
    filename: Annotated[str, Query(min_length=1, max_length=255, description="The file's name: .txt, .md or .pdf")],
) -> ExtractedText:
    """The text of a .txt, .md or .pdf file sent as the request body."""
    path = PurePosixPath(filename.replace("\\", "/"))
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise InvalidRequest(f"Cannot read '{path.name}': send a {', '.join(TEXT_SUFFIXES)} file "
                             "(a .jsonl file of documents goes to POST /v1/learn as it is).",
                             param="filename", code="unsupported_file_type")
    data = await request.body()
    if not data:
        raise InvalidRequest("The request body is empty: send the file's bytes.", code="empty_file")
    try:
        text = (await asyncio.to_thread(extract_text, data, suffix)).strip()
    except UnreadableFile as exc:
        raise InvalidRequest(f"Cannot read '{path.name}': {exc}.", param="file", code="unreadable_file") from exc
    if not text:
        raise InvalidRequest(f"'{path.name}' holds no text (a scanned PDF needs OCR first).", param="file",
                             code="no_text")
    return ExtractedText(title=path.stem, text=text, characters=len(text))
