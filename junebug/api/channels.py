"""Routes for /channels/: list, create, read, modify, restart, delete, logs."""

from __future__ import annotations

from typing import Any

from junebug.api.envelope import respond
from junebug.api.errors import ApiUsageError
from junebug.api.operations import CHANNEL, EMPTY, ID_LIST, LOG_ENTRIES, QueryParameter
from junebug.api.schemas import CHANNEL_CREATE, CHANNEL_UPDATE, parse_object

CHANNEL_PATH = "/channels/<string:channel_id>"


def register(api: Any) -> None:
    manager = api.manager
    route = api.route

    @route("/channels/", "GET", "List channel ids", 200, "channels listed", ID_LIST, errors=())
    async def list_channels(request: Any) -> bytes:
        return respond(request, 200, "channels listed", await manager.ids())

    @route(
        "/channels/",
        "POST",
        "Create a channel",
        201,
        "channel created",
        CHANNEL,
        body=CHANNEL_CREATE,
        errors=(400,),
    )
    async def create_channel(request: Any) -> bytes:
        body = parse_object(request, CHANNEL_CREATE)
        channel = await manager.create(body)
        return respond(request, 201, "channel created", await channel.view())

    @route(CHANNEL_PATH, "GET", "A channel and its status", 200, "channel found", CHANNEL)
    async def get_channel(request: Any, channel_id: str) -> bytes:
        channel = await manager.get(channel_id)
        return respond(request, 200, "channel found", await channel.view())

    @route(
        CHANNEL_PATH,
        "POST",
        "Modify a channel",
        200,
        "channel updated",
        CHANNEL,
        body=CHANNEL_UPDATE,
    )
    async def modify_channel(request: Any, channel_id: str) -> bytes:
        body = parse_object(request, CHANNEL_UPDATE)
        channel = await manager.update(channel_id, body)
        return respond(request, 200, "channel updated", await channel.view())

    @route(
        CHANNEL_PATH,
        "DELETE",
        "Stop and delete a channel",
        200,
        "channel deleted",
        EMPTY,
        errors=(404,),
    )
    async def delete_channel(request: Any, channel_id: str) -> bytes:
        await manager.delete(channel_id)
        return respond(request, 200, "channel deleted", {})

    @route(CHANNEL_PATH + "/restart", "POST", "Restart a channel", 200, "channel restarted", EMPTY)
    async def restart_channel(request: Any, channel_id: str) -> bytes:
        await manager.restart(channel_id)
        return respond(request, 200, "channel restarted", {})

    @route(
        CHANNEL_PATH + "/logs",
        "GET",
        "A channel's newest log lines",
        200,
        "logs retrieved",
        LOG_ENTRIES,
        query=LOG_QUERY,
    )
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


LOG_QUERY = (
    QueryParameter("n", {"type": "integer", "minimum": 0}, "how many lines (at most max_logs)"),
    QueryParameter("message_id", {"type": "string"}, "only the lines about this message"),
)


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
