"""Routes for /routers/: routers, their destinations, logs, and sending from a destination.

PUT replaces a router (or destination); PATCH merges the given fields into the stored
ones (a shallow merge: a given ``config`` replaces the whole config) and validates the
result as a whole, with the same schema as PUT and create.
"""

from __future__ import annotations

from typing import Any

from junebug import messages
from junebug.api.channels import LOG_QUERY, _int_arg, _str_arg
from junebug.api.envelope import respond
from junebug.api.errors import AmqpConnectionError, ApiUsageError
from junebug.api.messages import build_outbound, check_length, message_status_of
from junebug.api.operations import (
    EMPTY,
    ID_LIST,
    LOG_ENTRIES,
    MESSAGE,
    MESSAGE_STATUS,
)
from junebug.api.schemas import (
    MESSAGE_SEND,
    TEMPLATE_KEYWORD,
    parse_json_body,
    parse_object,
    validate,
)
from junebug.bus.base import BusUnavailable
from junebug.store.rates import RATE_FIELDS

ROUTER_PATH = "/routers/<string:router_id>"
DESTINATION_PATH = ROUTER_PATH + "/destinations/<string:destination_id>"

_NULLABLE_STRING = {"type": ["string", "null"]}

ROUTER_PROPERTIES: dict[str, Any] = {
    "type": {"type": "string", "minLength": 1, "description": "router type, e.g. from_address"},
    "label": {**_NULLABLE_STRING, "description": "user-defined label"},
    "config": {"type": "object", "description": "settings for the router type"},
    "metadata": {"type": ["object", "null"], "description": "user-defined data"},
}

ROUTER_CREATE = {
    "type": "object",
    "properties": ROUTER_PROPERTIES,
    "required": ["type", "config"],
    "additionalProperties": False,
    "examples": [
        {
            "type": "from_address",
            "label": "USSD *123*4567#",
            "config": {"channel": "65227a53-b785-4679-a8e6-b53115b7995a"},
            "metadata": {"owner": 7},
        }
    ],
}

ROUTER_UPDATE = {"type": "object", "properties": ROUTER_PROPERTIES, "additionalProperties": False}

DESTINATION_PROPERTIES: dict[str, Any] = {
    "label": {**_NULLABLE_STRING, "description": "user-defined label"},
    "config": {"type": "object", "description": "settings for the router type"},
    "metadata": {"type": ["object", "null"], "description": "user-defined data"},
    "mo_url": {
        "type": ["string", "null"],
        "pattern": "^https?://",
        "format": "uri",
        # Templates checked like a channel's mo_url (callback_templates).
        TEMPLATE_KEYWORD: "inbound",
        "description": "where inbound messages are POSTed",
    },
    "mo_url_token": {**_NULLABLE_STRING, "description": "token for mo_url"},
    "mo_url_auth_token": {**_NULLABLE_STRING, "description": "another name for mo_url_token"},
    "amqp_queue": {
        "type": ["string", "null"],
        "pattern": "^[a-z0-9_.:-]+$",
        "description": "AMQP routing key prefix for inbound, events and outbound",
    },
    "character_limit": {
        "type": ["integer", "null"],
        "minimum": 0,
        "description": "longest content allowed",
    },
}

DESTINATION_CREATE = {
    "type": "object",
    "properties": DESTINATION_PROPERTIES,
    "required": ["config"],
    "additionalProperties": False,
    "examples": [
        {
            "label": "*123*4567*1# subcode",
            "config": {"regular_expression": "^\\*123\\*4567\\*1#$"},
            "mo_url": "https://www.example.org/messages",
            "mo_url_token": "my-secret-token",
            "character_limit": 140,
        }
    ],
}

DESTINATION_UPDATE = {
    "type": "object",
    "properties": DESTINATION_PROPERTIES,
    "additionalProperties": False,
}

RATES = {
    "type": "object",
    "properties": {field: {"type": "number"} for field in RATE_FIELDS.values()},
    "required": list(RATE_FIELDS.values()),
}

ROUTER = {
    "type": "object",
    "properties": {**ROUTER_PROPERTIES, "id": {"type": "string"}, "status": RATES},
    "required": ["id", "type", "config", "status"],
}

DESTINATION = {
    "type": "object",
    "properties": {**DESTINATION_PROPERTIES, "id": {"type": "string"}, "status": RATES},
    "required": ["id", "config", "status"],
}


def _merged(stored: dict[str, Any], request: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """PATCH: the request's fields over the stored ones, validated as a whole."""
    changes = parse_json_body(request)
    validate(ROUTER_UPDATE if schema is ROUTER_CREATE else DESTINATION_UPDATE, changes)
    merged = {**stored, **changes}
    validate(schema, merged)
    return merged


def register(api: Any) -> None:
    route = api.route

    def routers() -> Any:
        if api.routers is None:
            raise ApiUsageError("routers are not available in this Junebug")
        return api.routers

    # -- routers ----------------------------------------------------------------------

    @route("/routers/", "GET", "List router ids", 200, "routers retrieved", ID_LIST, errors=())
    async def list_routers(request: Any) -> bytes:
        return respond(request, 200, "routers retrieved", await routers().ids())

    @route(
        "/routers/",
        "POST",
        "Create a router",
        201,
        "router created",
        ROUTER,
        body=ROUTER_CREATE,
        errors=(400,),
    )
    async def create_router(request: Any) -> bytes:
        body = parse_object(request, ROUTER_CREATE)
        manager = routers()
        router_id = await manager.create(body)
        return respond(request, 201, "router created", await manager.view(router_id))

    @route(
        ROUTER_PATH, "GET", "A router and its status", 200, "router found", ROUTER, errors=(404,)
    )
    async def get_router(request: Any, router_id: str) -> bytes:
        return respond(request, 200, "router found", await routers().view(router_id))

    @route(
        ROUTER_PATH,
        "PUT",
        "Replace a router's settings",
        200,
        "router updated",
        ROUTER,
        body=ROUTER_CREATE,
    )
    async def replace_router(request: Any, router_id: str) -> bytes:
        manager = routers()
        await manager.load(router_id)
        body = parse_object(request, ROUTER_CREATE)
        await manager.update(router_id, body)
        return respond(request, 200, "router updated", await manager.view(router_id))

    @route(
        ROUTER_PATH,
        "PATCH",
        "Change some of a router's settings",
        200,
        "router updated",
        ROUTER,
        body=ROUTER_UPDATE,
    )
    async def patch_router(request: Any, router_id: str) -> bytes:
        manager = routers()
        merged = _merged(await manager.load(router_id), request, ROUTER_CREATE)
        await manager.update(router_id, merged)
        return respond(request, 200, "router updated", await manager.view(router_id))

    @route(
        ROUTER_PATH,
        "DELETE",
        "Stop and delete a router and its destinations",
        200,
        "router deleted",
        EMPTY,
        errors=(404,),
    )
    async def delete_router(request: Any, router_id: str) -> bytes:
        await routers().delete(router_id)
        return respond(request, 200, "router deleted", {})

    @route(
        ROUTER_PATH + "/logs",
        "GET",
        "A router's newest log lines",
        200,
        "logs retrieved",
        LOG_ENTRIES,
        query=LOG_QUERY,
    )
    async def router_logs(request: Any, router_id: str) -> bytes:
        await routers().load(router_id)
        return respond(request, 200, "logs retrieved", _logs(api.config, request, router_id))

    # -- destinations -----------------------------------------------------------------

    @route(
        ROUTER_PATH + "/destinations/",
        "GET",
        "List a router's destination ids",
        200,
        "destinations retrieved",
        ID_LIST,
        errors=(404,),
    )
    async def list_destinations(request: Any, router_id: str) -> bytes:
        ids = await routers().destination_ids(router_id)
        return respond(request, 200, "destinations retrieved", ids)

    @route(
        ROUTER_PATH + "/destinations/",
        "POST",
        "Create a destination",
        201,
        "destination created",
        DESTINATION,
        body=DESTINATION_CREATE,
    )
    async def create_destination(request: Any, router_id: str) -> bytes:
        manager = routers()
        await manager.load(router_id)
        body = parse_object(request, DESTINATION_CREATE)
        destination_id = await manager.create_destination(router_id, body)
        view = await manager.destination_view(router_id, destination_id)
        return respond(request, 201, "destination created", view)

    @route(
        DESTINATION_PATH,
        "GET",
        "A destination and its status",
        200,
        "destination found",
        DESTINATION,
        errors=(404,),
    )
    async def get_destination(request: Any, router_id: str, destination_id: str) -> bytes:
        view = await routers().destination_view(router_id, destination_id)
        return respond(request, 200, "destination found", view)

    @route(
        DESTINATION_PATH,
        "PUT",
        "Replace a destination's settings",
        200,
        "destination updated",
        DESTINATION,
        body=DESTINATION_CREATE,
    )
    async def replace_destination(request: Any, router_id: str, destination_id: str) -> bytes:
        manager = routers()
        await manager.load_destination(router_id, destination_id)
        body = parse_object(request, DESTINATION_CREATE)
        await manager.update_destination(router_id, destination_id, body)
        view = await manager.destination_view(router_id, destination_id)
        return respond(request, 200, "destination updated", view)

    @route(
        DESTINATION_PATH,
        "PATCH",
        "Change some of a destination's settings",
        200,
        "destination updated",
        DESTINATION,
        body=DESTINATION_UPDATE,
    )
    async def patch_destination(request: Any, router_id: str, destination_id: str) -> bytes:
        manager = routers()
        stored = await manager.load_destination(router_id, destination_id)
        merged = _merged(stored, request, DESTINATION_CREATE)
        await manager.update_destination(router_id, destination_id, merged)
        view = await manager.destination_view(router_id, destination_id)
        return respond(request, 200, "destination updated", view)

    @route(
        DESTINATION_PATH,
        "DELETE",
        "Delete a destination",
        200,
        "destination deleted",
        EMPTY,
        errors=(404,),
    )
    async def delete_destination(request: Any, router_id: str, destination_id: str) -> bytes:
        await routers().delete_destination(router_id, destination_id)
        return respond(request, 200, "destination deleted", {})

    @route(
        DESTINATION_PATH + "/logs",
        "GET",
        "A destination's newest log lines",
        200,
        "logs retrieved",
        LOG_ENTRIES,
        query=LOG_QUERY,
    )
    async def destination_logs(request: Any, router_id: str, destination_id: str) -> bytes:
        await routers().load_destination(router_id, destination_id)
        entries = _logs(api.config, request, destination_id)
        return respond(request, 200, "logs retrieved", entries)

    # -- a destination's messages -----------------------------------------------------

    @route(
        DESTINATION_PATH + "/messages/",
        "POST",
        "Send a message (or a reply) from a destination",
        201,
        "message submitted",
        MESSAGE,
        body=MESSAGE_SEND,
    )
    async def send_from_destination(request: Any, router_id: str, destination_id: str) -> bytes:
        manager = routers()
        await manager.load_destination(router_id, destination_id)
        body = parse_object(request, MESSAGE_SEND)
        router = manager.running_router(router_id)
        destination = router.destinations[destination_id]
        _require_delivery(destination)
        message = await build_outbound(api.backends, router.channel_ids[0], destination.id, body)
        check_length(message, destination.character_limit)
        channel_id = router.channel_for_outbound(destination, message)
        message["transport_name"] = channel_id
        record = {**body, **messages.api_from_message(message)}
        try:
            await router.dispatch(destination, channel_id, message, record)
        except BusUnavailable as exc:
            raise AmqpConnectionError(f"Message not sent, message bus unavailable: {exc}") from exc
        return respond(request, 201, "message submitted", messages.api_from_message(message))

    @route(
        DESTINATION_PATH + "/messages/<string:message_id>",
        "GET",
        "A message a destination sent: its status and events",
        200,
        "message status",
        MESSAGE_STATUS,
    )
    async def destination_message_status(
        request: Any, router_id: str, destination_id: str, message_id: str
    ) -> bytes:
        manager = routers()
        await manager.load_destination(router_id, destination_id)
        router = manager.running_router(router_id)
        destination = router.destinations[destination_id]
        _require_delivery(destination)
        result = await message_status_of(
            api.backends, destination.id, router.channel_ids[0], message_id
        )
        return respond(request, 200, "message status", result)


def _require_delivery(destination: Any) -> None:
    if not destination.delivery.configured:
        raise ApiUsageError(
            'This destination has no "mo_url" or "amqp_queue": give it one of them to send '
            "and read messages through it"
        )


def _logs(config: Any, request: Any, owner_id: str) -> list[dict[str, Any]]:
    from junebug.logs import read_logs

    n = _int_arg(request, "n", default=config.max_logs, minimum=0)
    message_id = _str_arg(request, "message_id")
    return read_logs(config.logging_path, owner_id, min(n, config.max_logs), message_id=message_id)
