"""Routes for the dead letters of a channel or a router destination: callbacks given up
on (docs/callbacks.md).

List them (newest first, paged), replay them (all or some: they are queued again
behind whatever waits for their URL) and delete them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from junebug.api.envelope import respond
from junebug.api.errors import ApiUsageError
from junebug.api.operations import QueryParameter
from junebug.api.schemas import DEAD_LETTER_REPLAY, parse_json_body, validate
from junebug.workers.callbacks import dead_letter_view

PATH = "/channels/<string:channel_id>/dead-letters"
#: A router destination's dead letters (its mo_url callbacks and their events').
DESTINATION_PATH = "/routers/<string:router_id>/destinations/<string:destination_id>/dead-letters"
#: Dead letters per page unless ``limit`` says otherwise, and the most it may say.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500

_NULLABLE_STRING = {"type": ["string", "null"]}

DEAD_LETTER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"enum": ["inbound", "event", "status"]},
        "url": {"type": "string"},
        "message_id": _NULLABLE_STRING,
        "attempts": {"type": "integer"},
        "last_error": {"type": "string"},
        "last_status": {"type": ["integer", "null"]},
        "created_at": _NULLABLE_STRING,
        "first_attempt_at": _NULLABLE_STRING,
        "last_attempt_at": _NULLABLE_STRING,
        "replays": {"type": "integer"},
        "payload": {},
    },
    "required": ["id", "kind", "url", "attempts", "last_error", "payload"],
}

DEAD_LETTER_PAGE = {
    "type": "object",
    "properties": {
        "total": {"type": "integer"},
        "offset": {"type": "integer"},
        "limit": {"type": "integer"},
        "dead_letters": {"type": "array", "items": DEAD_LETTER},
    },
    "required": ["total", "offset", "limit", "dead_letters"],
}

REPLAYED = {
    "type": "object",
    "properties": {"replayed": {"type": "integer"}},
    "required": ["replayed"],
}

DELETED = {
    "type": "object",
    "properties": {"deleted": {"type": "integer"}},
    "required": ["deleted"],
}

PAGE_QUERY = (
    QueryParameter("offset", {"type": "integer", "minimum": 0}, "dead letters to skip"),
    QueryParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        f"dead letters per page (default {DEFAULT_LIMIT})",
    ),
)


def register(api: Any) -> None:
    async def channel(channel_id: str) -> tuple[str, Callable[[str], None]]:
        found = await api.manager.get(channel_id)

        def note(text: str) -> None:
            found.log.info(text)
            if api.manager.running.get(found.id) is not found:
                found.close_log()  # a channel running elsewhere: its log was opened for this

        return found.id, note

    async def destination(router_id: str, destination_id: str) -> tuple[str, Callable[[str], None]]:
        if api.routers is None:
            raise ApiUsageError("routers are not available in this Junebug")
        await api.routers.load_destination(router_id, destination_id)

        def note(text: str) -> None:
            running = api.routers.running.get(router_id)
            if running is not None:
                running.destination_log(destination_id).info(text)
                return
            log = api.backends.open_log(destination_id)
            try:
                log.info(text)
            finally:
                log.close()

        return destination_id, note

    _register(api, PATH, "a channel's", channel, "", delete_errors=(404,))
    # A Junebug without routers answers 400 to all three.
    _register(
        api,
        DESTINATION_PATH,
        "a router destination's",
        destination,
        "_of_destination",
        delete_errors=(400, 404),
    )


def _register(
    api: Any,
    path: str,
    whose: str,
    owner: Callable[..., Awaitable[tuple[str, Callable[[str], None]]]],
    suffix: str,
    *,
    delete_errors: tuple[int, ...],
) -> None:
    """The three dead-letter routes under ``path`` for the owner ``owner`` finds (from
    the path's values): its id, and how to note something in its log."""

    whom = whose.removesuffix("'s")  # "a channel's" -> "a channel"

    def callbacks() -> Any:
        return api.backends.callbacks

    @api.route(
        path,
        "GET",
        f"{whose.capitalize()} dead letters (callbacks given up on), newest first",
        200,
        "dead letters listed",
        DEAD_LETTER_PAGE,
        query=PAGE_QUERY,
        endpoint="list_dead_letters" + suffix,
    )
    async def list_dead_letters(request: Any, **ids: str) -> bytes:
        owner_id, _ = await owner(**ids)
        offset = _int_arg(request, "offset", 0, 0, None)
        limit = _int_arg(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        total, records = await callbacks().store.dead_letters(owner_id, offset, limit)
        result = {
            "total": total,
            "offset": offset,
            "limit": limit,
            "dead_letters": [dead_letter_view(record) for record in records],
        }
        return respond(request, 200, "dead letters listed", result)

    @api.route(
        path + "/replay",
        "POST",
        f"Queue {whose} dead letters for delivery again",
        200,
        "dead letters replayed",
        REPLAYED,
        body=DEAD_LETTER_REPLAY,
        endpoint="replay_dead_letters" + suffix,
    )
    async def replay_dead_letters(request: Any, **ids: str) -> bytes:
        owner_id, note = await owner(**ids)
        body = parse_json_body(request)
        validate(DEAD_LETTER_REPLAY, body)
        replayed = await callbacks().replay(owner_id, (body or {}).get("ids"))
        if replayed:
            note(f"{replayed} dead letter(s) replayed")
        return respond(request, 200, "dead letters replayed", {"replayed": replayed})

    @api.route(
        path,
        "DELETE",
        f"Delete every dead letter of {whom}",
        200,
        "dead letters deleted",
        DELETED,
        errors=delete_errors,
        endpoint="delete_dead_letters" + suffix,
    )
    async def delete_dead_letters(request: Any, **ids: str) -> bytes:
        owner_id, _ = await owner(**ids)
        deleted = await callbacks().store.delete_dead(owner_id, None)
        return respond(request, 200, "dead letters deleted", {"deleted": deleted})


def _int_arg(request: Any, name: str, default: int, minimum: int, maximum: int | None) -> int:
    values = request.args.get(name.encode())
    if not values:
        return default
    text = values[0].decode("utf-8", "replace")
    try:
        value = int(text)
    except ValueError:
        raise ApiUsageError(f"{name}: {text!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and at most {maximum}" if maximum is not None else ""
        raise ApiUsageError(f"{name}: must be at least {minimum}{upper}, got {value}")
    return value
