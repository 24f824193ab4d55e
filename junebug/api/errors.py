"""Errors a user can cause, each with its HTTP status and description.

``result.errors`` lists every problem in the original's shape: ``{type, message}``
(plus ``schema_path`` for request-body schema errors).
"""

from __future__ import annotations

from typing import Any


class JunebugError(Exception):
    status = 500
    description = "generic error"

    def __init__(self, message: str = "", errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self._errors = errors

    @property
    def type(self) -> str:
        return type(self).__name__

    @property
    def errors(self) -> list[dict[str, Any]]:
        if self._errors is not None:
            return self._errors
        return [{"type": self.type, "message": self.message}]


class ApiUsageError(JunebugError):
    status = 400
    description = "api usage error"


class JsonDecodeError(JunebugError):
    status = 400
    description = "json decode error"


class InvalidChannelType(JunebugError):
    status = 400
    description = "invalid channel type"


class InvalidChannelConfig(JunebugError):
    status = 400
    description = "invalid channel config"


class ChannelNotFound(JunebugError):
    status = 404
    description = "channel not found"


class MessageNotFound(JunebugError):
    status = 400
    description = "message not found"


class UnknownMessage(JunebugError):
    """GET of a message id that was never seen (or has expired)."""

    status = 404
    description = "message not found"

    @property
    def type(self) -> str:
        return "MessageNotFound"


class MessageTooLong(JunebugError):
    status = 400
    description = "message too long"


class ChannelStartError(JunebugError):
    status = 400
    description = "channel could not start"


class AmqpConnectionError(JunebugError):
    status = 503
    description = "amqp connection error"


class StoreUnavailable(JunebugError):
    status = 503
    description = "redis connection error"


class IdempotencyKeyReused(JunebugError):
    """The Idempotency-Key was first used with a different request body."""

    status = 422
    description = "idempotency key reused"


class RequestInProgress(JunebugError):
    """The first request with this Idempotency-Key has not answered yet."""

    status = 409
    description = "request in progress"


class ChannelRunningElsewhere(JunebugError):
    """The channel runs in another jb process sharing this Redis: change it there."""

    status = 409
    description = "channel running elsewhere"
