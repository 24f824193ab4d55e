"""Channel types by name, and loading extra ones from ``type: python.path`` mappings."""

from __future__ import annotations

import importlib
from typing import Any

from junebug.transports.base import Transport

#: The channel types every Junebug has (more are added as they are built).
DEFAULT_CHANNEL_TYPES: dict[str, str] = {
    "telnet": "junebug.transports.telnet.TelnetChannel",
    "dmark": "junebug.transports.dmark.DmarkUssdChannel",
    "xmpp": "junebug.transports.xmpp.XmppChannel",
    "smpp": "junebug.transports.smpp.transport.SmppChannel",
}


class ChannelTypeError(ValueError):
    """A channel type mapping names something that is not a usable transport class."""


def load_class(path: str) -> Any:
    """Import ``package.module.Class``; raises ChannelTypeError with the reason."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name:
        raise ChannelTypeError(f"{path!r} is not a full python path (package.module.Class)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ChannelTypeError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ChannelTypeError(f"module {module_name!r} has no {class_name!r}") from None


def channel_types(extra: dict[str, str], replace: bool = False) -> dict[str, type[Transport]]:
    """Resolve the channel types in use: the defaults plus (or only) ``extra``."""
    mapping = dict(extra) if replace else {**DEFAULT_CHANNEL_TYPES, **extra}
    resolved: dict[str, type[Transport]] = {}
    for name, path in mapping.items():
        cls = load_class(path)
        if not (isinstance(cls, type) and issubclass(cls, Transport)):
            raise ChannelTypeError(
                f"channel type {name!r}: {path} is not a junebug.transports.base.Transport"
            )
        resolved[name] = cls
    return resolved
