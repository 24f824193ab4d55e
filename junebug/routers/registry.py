"""Router types by name, and loading extra ones from ``type: python.path`` mappings
(``--routers`` / ``--replace-routers``, or ``routers`` / ``replace_routers`` in the
config file), exactly as channel types are loaded."""

from __future__ import annotations

from junebug.routers.base import Router
from junebug.transports.registry import ChannelTypeError, load_class

#: The router types every Junebug has.
DEFAULT_ROUTER_TYPES: dict[str, str] = {
    "from_address": "junebug.routers.from_address.FromAddressRouter",
}


class RouterTypeError(ValueError):
    """A router type mapping names something that is not a usable router class."""


def router_types(extra: dict[str, str], replace: bool = False) -> dict[str, type[Router]]:
    """Resolve the router types in use: the defaults plus (or only) ``extra``."""
    mapping = dict(extra) if replace else {**DEFAULT_ROUTER_TYPES, **extra}
    resolved: dict[str, type[Router]] = {}
    for name, path in mapping.items():
        try:
            cls = load_class(path)
        except ChannelTypeError as exc:
            raise RouterTypeError(f"router type {name!r}: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Router)):
            raise RouterTypeError(
                f"router type {name!r}: {path} is not a junebug.routers.base.Router"
            )
        resolved[name] = cls
    return resolved
