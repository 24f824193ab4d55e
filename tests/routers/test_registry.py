"""Router types: the defaults, and extra ones loaded like channel types."""

from __future__ import annotations

import pytest
import pytest_twisted

from junebug.routers.from_address import FromAddressRouter
from junebug.routers.registry import RouterTypeError, router_types
from tests.routers.keyword import KeywordRouter


def test_the_default_router_type():
    assert router_types({}) == {"from_address": FromAddressRouter}


def test_extra_types_are_added_or_replace_the_defaults():
    extra = {"keyword": "tests.routers.keyword.KeywordRouter"}
    assert router_types(extra) == {"from_address": FromAddressRouter, "keyword": KeywordRouter}
    assert router_types(extra, replace=True) == {"keyword": KeywordRouter}


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("NoDots", "not a full python path"),
        ("no_such_module.Router", "cannot import"),
        ("tests.routers.keyword.Missing", "has no 'Missing'"),
        ("junebug.transports.telnet.TelnetChannel", "is not a junebug.routers.base.Router"),
    ],
)
def test_bad_router_types_are_refused_with_the_reason(path, reason):
    with pytest.raises(RouterTypeError, match=reason):
        router_types({"bad": path})


def test_from_address_validation():
    check = FromAddressRouter.check_destination_config
    assert check({"regular_expression": "^1#$", "default": True}) == []
    assert "invalid" in check({"regular_expression": "("})[0]["message"]
    assert FromAddressRouter.validate_destinations([{"default": True}, {"default": False}]) == []
    assert FromAddressRouter.validate_destinations([{"default": True}, {"default": True}])


@pytest.mark.parametrize(
    ("to_addr", "expected"),
    [
        ("*123*4567*1#", ["one", "wide"]),
        ("*123*4567*2#", ["two", "wide"]),
        ("*999#", ["fallback"]),
        (None, ["fallback"]),
    ],
)
def test_from_address_routes_on_the_to_address(to_addr, expected):
    from junebug.routers.base import RouterDestination

    class Log:
        def warning(self, *args, **kwargs):
            pass

    destinations = [
        RouterDestination("one", {"config": {"regular_expression": r"\*1#$"}}),
        RouterDestination("two", {"config": {"regular_expression": r"\*2#$"}}),
        RouterDestination("wide", {"config": {"regular_expression": r"^\*123\*4567\*"}}),
        RouterDestination(
            "fallback", {"config": {"regular_expression": "^never$", "default": True}}
        ),
    ]
    router = FromAddressRouter("r", {"channel": "c"}, destinations, backends=None, log=Log())
    message = {"to_addr": to_addr, "from_addr": "*123*4567*1#", "message_id": "m"}
    assert sorted(router.route_inbound(message)) == expected


@pytest_twisted.ensureDeferred
async def test_jb_refuses_to_start_with_a_bad_router_type(tmp_path):
    from junebug.service import JunebugService, StartupError
    from tests.conftest import make_config

    config = make_config(tmp_path, routers={"broken": "no_such_module.Router"})
    with pytest.raises(StartupError, match="bad router type mapping: router type 'broken'"):
        await JunebugService(config).start()
