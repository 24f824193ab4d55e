"""Checking callback URLs when they are given, not when the first callback fails."""

from __future__ import annotations

from urllib.parse import urlsplit

#: Channel fields holding URLs Junebug POSTs to.
CALLBACK_URL_FIELDS = ("mo_url", "status_url")


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be POSTed to, or None when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port out of range or not a number
        host = parts.hostname
    except ValueError as exc:
        return f"{url!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} must start with http:// or https://"
    if not host:
        return f"{url!r} has no host"
    if port == 0:
        return f"{url!r} has port 0"
    return None
