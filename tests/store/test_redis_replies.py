"""Replies read through hiredis's C reader are what txredisapi's own parser makes of them.

``hiredis`` is a dependency because txredisapi parses replies with it when it is
installed; its own parser is Python and goes back to the reactor between the parts of
a multi-part reply. These tests hold the two parsers to the same answers: against the
real Redis for every kind of reply the stores rely on, and with hypothesis for any
reply however TCP cuts it up.
"""

from __future__ import annotations

import platform

import pytest
import pytest_twisted
import txredisapi
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import protocol, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from junebug.store import redis as redis_store

from ..conftest import REDIS_HOST, REDIS_PORT

# hiredis is a dependency on CPython only (pyproject.toml): elsewhere txredisapi parses.
needs_hiredis = pytest.mark.skipif(
    platform.python_implementation() != "CPython", reason="hiredis is installed on CPython only"
)

# The options junebug.store.redis.connect gives txredisapi.
_OPTIONS = {"charset": "utf-8", "convertNumbers": False}


async def _open(protocol_class):
    creator = protocol.ClientCreator(reactor, protocol_class, **_OPTIONS)
    connection = await creator.connectTCP(REDIS_HOST, REDIS_PORT)
    await connection.whenConnected()
    return connection


@pytest_twisted.async_yield_fixture
async def both():
    """A connection parsing with txredisapi's own parser and one parsing with hiredis."""
    python = await _open(txredisapi.BaseRedisProtocol)
    c = await _open(txredisapi.HiredisProtocol)
    yield python, c
    python.transport.loseConnection()
    c.transport.loseConnection()


async def _same(both, command: str, *args):
    """Run a read-only command on both connections; the answers must be equal."""
    python, c = both
    answers = []
    for connection in (python, c):
        try:
            answers.append(("ok", await getattr(connection, command)(*args)))
        except txredisapi.ResponseError as exc:
            answers.append(("error", type(exc), str(exc)))
    assert answers[0] == answers[1], (command, args)
    return answers[0]


@needs_hiredis
@pytest_twisted.ensureDeferred
async def test_connect_parses_replies_with_hiredis(redis):
    assert isinstance(
        await redis._connection._factory.getConnection(peek=True), txredisapi.HiredisProtocol
    )


@needs_hiredis
@pytest_twisted.ensureDeferred
async def test_each_kind_of_reply_reads_the_same(both, key_prefix):
    python, _ = both
    text, number, hash_key, missing = (f"{key_prefix}:{n}" for n in ("t", "n", "h", "none"))
    await python.set(text, "caf\u00e9 \r\n\x00 \U0001f600" + "x" * 100_000)
    await python.set(number, 41)
    await python.hset(hash_key, "a", "1")
    await python.hset(hash_key, "b", "")
    try:
        assert (await _same(both, "get", text))[1].startswith("caf\u00e9 \r\n\x00")
        assert await _same(both, "get", number) == ("ok", "41")  # convertNumbers is off
        assert await _same(both, "get", missing) == ("ok", None)
        assert await _same(both, "exists", text) == ("ok", 1)
        assert await _same(both, "hgetall", hash_key) == ("ok", {"a": "1", "b": ""})
        assert await _same(both, "hgetall", missing) == ("ok", {})
        assert await _same(both, "ping") == ("ok", "PONG")
        nested = "return {1, 'two', {3, {'four'}}, false, redis.status_reply('OK')}"
        assert await _same(both, "eval", nested, []) == (
            "ok",
            [1, "two", [3, ["four"]], None, "OK"],
        )
        kind, error_class, _ = await _same(both, "eval", "return redis.error_reply('E1 no')", [])
        assert (kind, error_class) == ("error", txredisapi.ResponseError)
        assert (await _same(both, "hget", text, "a"))[0] == "error"  # WRONGTYPE
    finally:
        await python.delete([text, number, hash_key])


def _resp(value) -> bytes:
    """``value`` as Redis would send it (RESP 2)."""
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(_resp(item) for item in value)
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _parse(protocol_class, data: bytes, cuts: list[int]):
    connection = protocol_class(**_OPTIONS)
    # txredisapi's own parser goes back to the reactor between the parts of a reply
    clock = Clock()
    connection.callLater = clock.callLater
    connection.makeConnection(StringTransport())
    answer = connection.execute_command("GET", "k")
    edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    for start, end in zip(edges, edges[1:], strict=False):
        connection.dataReceived(data[start:end])  # the reply, as TCP may cut it up
        while clock.getDelayedCalls():
            clock.advance(0)
    return answer.result


_replies = st.recursive(
    st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=50) | st.binary(max_size=50),
    lambda children: st.lists(children, max_size=5),
    max_leaves=20,
)


@needs_hiredis
@given(reply=_replies, cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_any_reply_parses_the_same_however_it_is_cut(reply, cuts):
    data = _resp(reply)
    assert _parse(txredisapi.HiredisProtocol, data, cuts) == _parse(
        txredisapi.BaseRedisProtocol, data, cuts
    )


@needs_hiredis
def test_hiredis_is_what_txredisapi_uses():
    # If this fails, hiredis is missing or txredisapi stopped picking it up on its own.
    assert txredisapi.RedisProtocol is txredisapi.HiredisProtocol
    assert redis_store.txredisapi is txredisapi


_arguments = st.lists(
    st.binary(max_size=40)
    | st.text(max_size=40)  # lone surrogates included: those fail to encode
    | st.integers()
    | st.floats(allow_nan=False)
    | st.booleans()
    | st.none()
    | st.binary(max_size=10).map(bytearray),
    max_size=12,
)


def _built(protocol_class, args):
    try:
        return protocol_class(**_OPTIONS)._build_command(*args)
    except Exception as exc:  # the same failure is part of the same behaviour
        return type(exc)


@given(args=_arguments)
def test_commands_are_built_as_txredisapi_builds_them(args):
    assert _built(redis_store.RedisProtocol, args) == _built(txredisapi.BaseRedisProtocol, args)


@pytest_twisted.ensureDeferred
async def test_connections_build_commands_our_way(redis, key_prefix):
    connection = await redis._connection._factory.getConnection(peek=True)
    assert type(connection) is redis_store.RedisProtocol
    key = f"{key_prefix}:k"
    assert await redis.eval(
        "return {ARGV[1], ARGV[2], ARGV[3]}", [key], ["\u00e9", b"\xff", 7]
    ) == [
        "\u00e9",
        b"\xff",
        "7",
    ]


@pytest_twisted.ensureDeferred
async def test_commands_go_straight_to_the_connection_once_it_is_up(redis, key_prefix, monkeypatch):
    factory = redis._connection._factory

    def no_lookup(peek=False):
        raise AssertionError("looked the connection up through txredisapi's handler")

    monkeypatch.setattr(factory, "getConnection", no_lookup)
    key = f"{key_prefix}:direct"
    await redis.set(key, "1")
    assert await redis.get(key) == "1"
    # A command that cannot be encoded fails as a Deferred, as through the handler.
    failed = redis.set(key, "\ud800")
    with pytest.raises(txredisapi.InvalidData):
        await failed
