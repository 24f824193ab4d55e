"""Config pieces shared by channel types: numeric strings, vumi's base keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from junebug.transports.common import coerce_numbers

SCHEMA = {
    "type": "object",
    "properties": {
        "port": {"type": "integer"},
        "delay": {"type": ["number", "null"]},
        "name": {"type": "string"},
        "nested": {"type": "object", "properties": {"tps": {"type": "integer"}}},
    },
}


def test_numeric_strings_become_numbers_where_the_schema_wants_one():
    config = {"port": "8080", "delay": "2.5", "name": "12", "nested": {"tps": " 5 "}, "x": "1"}
    assert coerce_numbers(SCHEMA, config) == {
        "port": 8080,
        "delay": 2.5,
        "name": "12",  # a string field stays a string
        "nested": {"tps": 5},
        "x": "1",  # unknown keys are left to the schema
    }


def test_non_numeric_strings_are_left_for_the_schema_to_refuse():
    assert coerce_numbers(SCHEMA, {"port": "80a", "delay": "fast"}) == {
        "port": "80a",
        "delay": "fast",
    }


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_any_integer_written_as_a_string_round_trips(number):
    assert coerce_numbers(SCHEMA, {"port": str(number)}) == {"port": number}
