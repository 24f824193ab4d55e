"""The OpenAPI 3.1 description of the HTTP API, built from the declared operations.

OpenAPI 3.1 uses JSON Schema 2020-12, the dialect the request schemas are written
in, so the schemas the API validates with appear here unchanged.
"""

from __future__ import annotations

from typing import Any

from junebug.api.operations import ERRORS, Operation

ERROR_DESCRIPTIONS = {
    400: "The request is invalid; result.errors names each problem",
    404: "No such channel or message",
    409: "A conflicting request is still being handled, or the channel runs elsewhere",
    422: "The Idempotency-Key was first used with a different request",
    503: "Redis or the message bus is unavailable; retry later",
}


def envelope(result: dict[str, Any], status: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "status": {"const": status},
            "code": {"type": "string"},
            "description": {"type": "string"},
            "result": result,
        },
        "required": ["status", "code", "description", "result"],
    }


def _operation(op: Operation) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in op.path_parameters
    ]
    parameters += [
        {
            "name": q.name,
            "in": where,
            "required": False,
            "schema": q.schema,
            "description": q.description,
        }
        for where, declared in (("query", op.query), ("header", op.headers))
        for q in declared
    ]
    responses: dict[str, Any] = {
        str(op.status): {
            "description": op.description,
            "content": {"application/json": {"schema": envelope(op.result, op.status)}},
        }
    }
    for code, description, result in op.answers:
        responses[str(code)] = {
            "description": description,
            "content": {"application/json": {"schema": envelope(result, code)}},
        }
    for code in (*op.errors, 503):
        responses[str(code)] = {
            "description": ERROR_DESCRIPTIONS[code],
            "content": {"application/json": {"schema": envelope(ERRORS, code)}},
        }
    described: dict[str, Any] = {
        "summary": op.summary,
        "operationId": f"{op.method.lower()}_{op.openapi_path}".replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .strip("_"),
        "responses": responses,
    }
    if parameters:
        described["parameters"] = parameters
    if op.body is not None:
        described["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": op.body}},
        }
    return described


def _link_created_channel(paths: dict[str, Any]) -> None:
    """Links from the create answer to every operation on one channel (for clients and
    for schemathesis's stateful tests)."""
    created = paths["/channels/"]["post"]["responses"]["201"]
    links = {}
    for path, operations in paths.items():
        if not path.startswith("/channels/{channel_id}"):
            continue
        for operation in operations.values():
            links[operation["operationId"]] = {
                "operationId": operation["operationId"],
                "parameters": {"channel_id": "$response.body#/result/id"},
            }
    created["links"] = links


def build(operations: list[Operation], version: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.openapi_path, {})[op.method.lower()] = _operation(op)
    if "/channels/" in paths and "post" in paths["/channels/"]:
        _link_created_channel(paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Junebug",
            "version": version,
            "description": "Channels, messages, events and status of a Junebug gateway.",
        },
        "paths": paths,
    }
