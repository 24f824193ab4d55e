"""The response envelope every answer uses: ``{status, code, description, result}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from junebug import messages

#: HTTPStatus(status).phrase for every status it knows, looked up without the enum.
_PHRASES = {status.value: status.phrase for status in HTTPStatus}


def reason_phrase(status: int) -> str:
    return _PHRASES.get(status, "Unknown")


def respond(request: Any, status: int, description: str, result: Any = None) -> bytes:
    """Set status and JSON content type on ``request``; return the envelope's body."""
    phrase = reason_phrase(status)
    # Twisted's table lacks some phrases (422 would read "Unknown Status").
    request.setResponseCode(status, phrase.encode("ascii"))
    request.setHeader(b"Content-Type", b"application/json")
    body = {
        "status": status,
        "code": phrase,
        "description": description,
        "result": {} if result is None else result,
    }
    return messages.to_json(body).encode("ascii")
