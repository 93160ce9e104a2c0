"""The 422 of a request that fails validation: FastAPI's shape ({"detail": [{type, loc, msg,
input, ...}]}), with each error's `input` cut short and the JSON written in ASCII.

FastAPI's own handler echoes the whole input, so a large invalid body came back whole, and
writes UTF-8, so a lone surrogate in the input (valid in JSON's \\u escapes, not in UTF-8)
made the echo itself fail with a 500."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

ECHO_CHARS = 200


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: any Python string can be written."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def short(value: Any) -> Any:
    """`value` as it may be echoed: as it is when short; a long string's start, or a long
    document's JSON's start, marked as cut."""
    text = value if isinstance(value, str) else json.dumps(jsonable_encoder(value), default=repr)
    if len(text) <= ECHO_CHARS:
        return value
    return f"{text[:ECHO_CHARS]}... ({len(text):,} characters)"


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**error, "input": short(error["input"])} if "input" in error else error
        for error in exc.errors()
    ]
    return AsciiJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)
