"""Routes for /channels/: list, create, read, modify, restart, delete, logs."""

from __future__ import annotations

from typing import Any

from junebug.api.envelope import respond
from junebug.api.errors import ApiUsageError
from junebug.api.schemas import CHANNEL_CREATE, CHANNEL_UPDATE, parse_object


def register(app: Any, api: Any) -> None:
    manager = api.manager

    @app.route("/channels/", methods=["GET"])
    async def list_channels(request: Any) -> bytes:
        return respond(request, 200, "channels listed", await manager.ids())

    @app.route("/channels/", methods=["POST"])
    async def create_channel(request: Any) -> bytes:
        body = parse_object(request, CHANNEL_CREATE)
        channel = await manager.create(body)
        return respond(request, 201, "channel created", await channel.view())

    @app.route("/channels/<string:channel_id>", methods=["GET"])
    async def get_channel(request: Any, channel_id: str) -> bytes:
        channel = await manager.get(channel_id)
        return respond(request, 200, "channel found", await channel.view())

    @app.route("/channels/<string:channel_id>", methods=["POST"])
    async def modify_channel(request: Any, channel_id: str) -> bytes:
        body = parse_object(request, CHANNEL_UPDATE)
        channel = await manager.update(channel_id, body)
        return respond(request, 200, "channel updated", await channel.view())

    @app.route("/channels/<string:channel_id>", methods=["DELETE"])
    async def delete_channel(request: Any, channel_id: str) -> bytes:
        await manager.delete(channel_id)
        return respond(request, 200, "channel deleted", {})

    @app.route("/channels/<string:channel_id>/restart", methods=["POST"])
    async def restart_channel(request: Any, channel_id: str) -> bytes:
        await manager.restart(channel_id)
        return respond(request, 200, "channel restarted", {})

    @app.route("/channels/<string:channel_id>/logs", methods=["GET"])
    async def channel_logs(request: Any, channel_id: str) -> bytes:
        from junebug.logs import read_logs

        channel = await manager.get(channel_id)
        config = api.config
        n = _int_arg(request, "n", default=config.max_logs, minimum=0)
        message_id = _str_arg(request, "message_id")
        entries = read_logs(
            config.logging_path, channel.id, min(n, config.max_logs), message_id=message_id
        )
        return respond(request, 200, "logs retrieved", entries)


def _str_arg(request: Any, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


def _int_arg(request: Any, name: str, *, default: int, minimum: int) -> int:
    text = _str_arg(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiUsageError(f"{name}: {text!r} is not an integer") from None
    if value < minimum:
        raise ApiUsageError(f"{name}: must be at least {minimum}, got {value}")
    return value
