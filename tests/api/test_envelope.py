"""``junebug.api.envelope``: the reason phrases are HTTPStatus's, looked up in a table."""

from __future__ import annotations

from http import HTTPStatus

from junebug.api.envelope import reason_phrase


def _by_enum(status) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def test_reason_phrases_are_httpstatus_phrases() -> None:
    for status in [*range(-1, 1000), 201.0, True, 10**20]:
        assert reason_phrase(status) == _by_enum(status), status
    assert reason_phrase(422) == "Unprocessable Entity"
    assert reason_phrase(599) == "Unknown"
