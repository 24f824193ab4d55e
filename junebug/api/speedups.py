"""Cheaper ways to do what libraries do on every API request, with the same answers.

``install()`` is called where the API's ``Site`` is built (``service.py``); it is safe to
call more than once, and does nothing when the library code it replaces is not there
(a later Twisted), so an upgrade costs at most the speed, never a crash.

* **Content-Type parsing.** ``twisted.web.http.Request.requestReceived`` parses every
  POST's ``Content-Type`` with ``_parseContentType``, which builds an
  ``email.message.EmailMessage`` and its header objects: about 5 % of ``jb``'s CPU
  under load, for the same handful of values (``application/json``) over and over. The
  function is pure (header bytes in, the lowercased ``type/subtype`` out) and decides
  whether Twisted parses the body as form arguments (``multipart/form-data``,
  ``application/x-www-form-urlencoded``), so it is memoised rather than rewritten:
  every answer is Twisted's own, computed once per distinct value. The cache is
  bounded (``CONTENT_TYPE_CACHE`` values of at most ``CONTENT_TYPE_LONGEST`` bytes),
  so clients sending ever new values (multipart boundaries) cost what they cost
  before and no more memory than that.
* **The Date header.** ``twisted.web.server.Request.process`` formats the current time
  for every response's ``Date`` (``datetimeToString()``: ``gmtime`` and a bytes
  format, ~3 µs). The text only changes once a second, so the one for the current
  second is kept; it is Twisted's own function that formats it. Calls with an explicit
  time are passed straight through.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from twisted.web import http, server

#: Distinct Content-Type values remembered.
CONTENT_TYPE_CACHE = 256
#: Longer values are parsed every time (and never kept).
CONTENT_TYPE_LONGEST = 200

# Marks our replacement, so installing twice wraps once.
_MARK = "_junebug_memoised"


def memoised_content_type(original: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """``original`` (Twisted's ``_parseContentType``) with its answers remembered."""
    remember = functools.lru_cache(maxsize=CONTENT_TYPE_CACHE)(original)

    @functools.wraps(original)
    def parse_content_type(line: bytes) -> bytes:
        # Only exact bytes are hashable and immutable; anything else goes straight through.
        if type(line) is bytes and len(line) <= CONTENT_TYPE_LONGEST:
            return remember(line)
        return original(line)

    setattr(parse_content_type, _MARK, True)
    parse_content_type.cache_info = remember.cache_info  # type: ignore[attr-defined]
    return parse_content_type


def memoised_date(
    original: Callable[..., bytes], clock: Callable[[], float] = time.time
) -> Callable[..., bytes]:
    """``original`` (Twisted's ``datetimeToString``) with the current second's answer kept."""
    kept: list[tuple[Any, bytes]] = [(None, b"")]  # (the second, its text)

    @functools.wraps(original)
    def datetime_to_string(msSinceEpoch: Any = None) -> bytes:  # noqa: N803 - Twisted's name
        if msSinceEpoch is not None:
            return original(msSinceEpoch)
        second = int(clock())
        found = kept[0]
        if found[0] != second:
            found = kept[0] = (second, original(second))
        return found[1]

    setattr(datetime_to_string, _MARK, True)
    return datetime_to_string


def install() -> bool:
    """Put the cheaper versions in place; True when Content-Type parsing is memoised."""
    date: Any = getattr(server, "datetimeToString", None)
    if callable(date) and not getattr(date, _MARK, False):
        server.datetimeToString = memoised_date(date)
    original: Any = getattr(http, "_parseContentType", None)
    if not callable(original):
        return False
    if not getattr(original, _MARK, False):
        http._parseContentType = memoised_content_type(original)
    return True


def uninstall() -> None:
    """Put Twisted's own versions back (tests)."""
    current: Any = getattr(http, "_parseContentType", None)
    if getattr(current, _MARK, False):
        http._parseContentType = current.__wrapped__
    date: Any = getattr(server, "datetimeToString", None)
    if getattr(date, _MARK, False):
        server.datetimeToString = date.__wrapped__
