"""GET /health: is the API up (queue health checks come with RabbitMQ)."""

from __future__ import annotations

from typing import Any

from junebug.api.envelope import respond
from junebug.api.operations import EMPTY


def register(api: Any) -> None:
    @api.route(
        "/health", "GET", "Health check", 200, "health ok", EMPTY, errors=(), strict_slashes=False
    )
    async def health(request: Any) -> bytes:
        return respond(request, 200, "health ok", {})
