"""The OpenAPI description: complete, served, and honoured by a running jb."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import pytest_twisted
from jsonschema import Draft202012Validator
from twisted.internet.utils import getProcessOutputAndValue

from junebug.api.app import JunebugApi
from tests.helpers import JbProcess, free_port, within


def klein_routes(api: JunebugApi) -> set[tuple[str, str]]:
    routes = set()
    for rule in api.app.url_map.iter_rules():
        if rule.rule == "/openapi.json":
            continue
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            routes.add((rule.rule, method))
    return routes


def described_routes(document: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, ops in document["paths"].items() for method in ops}


def test_every_route_is_described_and_nothing_else(gateway):
    api = JunebugApi(gateway, gateway.backends)
    document = api.openapi()
    as_openapi = {(op.openapi_path, op.method) for op in api.operations}
    assert described_routes(document) == as_openapi
    assert {(op.path, op.method) for op in api.operations} == klein_routes(api)


def test_request_schemas_are_the_ones_the_api_validates_with(gateway):
    from junebug.api import schemas

    document = JunebugApi(gateway, gateway.backends).openapi()
    create = document["paths"]["/channels/"]["post"]["requestBody"]
    assert create["content"]["application/json"]["schema"] is schemas.CHANNEL_CREATE
    send = document["paths"]["/channels/{channel_id}/messages/"]["post"]["requestBody"]
    assert send["content"]["application/json"]["schema"] is schemas.MESSAGE_SEND
    for path in document["paths"].values():
        for operation in path.values():
            for response in operation["responses"].values():
                Draft202012Validator.check_schema(response["content"]["application/json"]["schema"])


@pytest_twisted.ensureDeferred
async def test_openapi_json_is_served(api):
    code, body = await api.get("/openapi.json")
    assert code == 200
    assert body["openapi"] == "3.1.0" and "/channels/" in body["paths"]


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_schemathesis_finds_no_server_errors_and_no_broken_answers(tmp_path):
    port = free_port()
    jb = await JbProcess(
        "-p",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
        "-lp",
        str(tmp_path / "logs"),
        cwd=str(tmp_path),
    ).start()
    try:
        schemathesis = Path(sys.executable).with_name("schemathesis")
        command = [
            str(schemathesis),
            "run",
            f"http://127.0.0.1:{port}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,"
            "content_type_conformance,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--no-color",
        ]
        # Run it without blocking the reactor: it reads jb's output while schemathesis works.
        out, err, code = await within(
            getProcessOutputAndValue(command[0], command[1:], env=dict(os.environ)), 400
        )
        assert code == 0, out.decode()[-6000:] + err.decode()[-2000:]
    finally:
        await jb.stop()
