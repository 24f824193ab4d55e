"""The response envelope every answer uses: ``{status, code, description, result}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from junebug import messages


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def respond(request: Any, status: int, description: str, result: Any = None) -> bytes:
    """Set status and JSON content type on ``request``; return the envelope's body."""
    # Twisted's table lacks some phrases (422 would read "Unknown Status").
    request.setResponseCode(status, reason_phrase(status).encode("ascii"))
    request.setHeader(b"Content-Type", b"application/json")
    body = {
        "status": status,
        "code": reason_phrase(status),
        "description": description,
        "result": {} if result is None else result,
    }
    return messages.to_json(body).encode("ascii")
