"""GET /health: is the API up (queue health checks come with RabbitMQ)."""

from __future__ import annotations

from typing import Any

from junebug.api.envelope import respond


def register(app: Any, api: Any) -> None:
    @app.route("/health", methods=["GET"], strict_slashes=False)
    async def health(request: Any) -> bytes:
        return respond(request, 200, "health ok", {})
