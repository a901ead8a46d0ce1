"""Bounded, UTC-normalised times: a time no real event has (year 1, year 9999, with an
offset that pushes it past the end of the calendar) is a schema violation when the event is
parsed, never a value that overflows in a later step; every accepted time is in UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from gateway.errors import SchemaViolation
from gateway.events import parse_event
from schemas.base import BoundedDate, Timestamp
from tests.conftest import event

TS = TypeAdapter(Timestamp)
DAY = TypeAdapter(BoundedDate)
POISON = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


@pytest.mark.parametrize(
    "value",
    [
        *POISON,
        "1969-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:30:00-01:00",  # 2100-01-01T00:30Z
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59",
    ],
)
def test_times_outside_1970_to_2100_are_rejected(value: str) -> None:
    with pytest.raises(ValidationError, match="time out of range"):
        TS.validate_python(value)


@pytest.mark.parametrize("value", POISON)
def test_a_poison_occurred_at_is_a_schema_violation(value: str) -> None:
    ev = event("order.placed", {}, n=1)
    ev["occurred_at"] = value
    with pytest.raises(SchemaViolation, match=r"occurred_at: .*time out of range"):
        parse_event(orjson.dumps(ev))


def test_times_are_normalised_to_utc_and_naive_times_taken_as_utc() -> None:
    assert TS.validate_python("2026-03-02T10:00:00+01:00") == datetime(2026, 3, 2, 9, tzinfo=UTC)
    assert TS.validate_python("2026-03-02T10:00:00") == datetime(2026, 3, 2, 10, tzinfo=UTC)
    got = TS.validate_python("1970-01-01T00:00:00Z")
    assert got.utcoffset() == timedelta(0)
    assert TS.dump_python(TS.validate_python("2026-03-02T10:00:00-05:00"), mode="json") == (
        "2026-03-02T15:00:00Z"
    )


def test_the_event_body_carries_the_utc_time() -> None:
    ev = event("customer.updated", {"emails": ["a@example.com"]}, n=2)
    ev["occurred_at"] = "2026-03-02T10:00:00+01:00"
    parsed = parse_event(orjson.dumps(ev))
    assert parsed.body["occurred_at"] == "2026-03-02T09:00:00Z"
    assert parsed.occurred_at == datetime(2026, 3, 2, 9, tzinfo=UTC)


@settings(max_examples=300)
@given(
    t=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(
            st.none(),
            # Offsets as ISO 8601 writes them: whole minutes.
            st.integers(-23 * 60, 23 * 60).map(lambda m: timezone(timedelta(minutes=m))),
        ),
    )
)
def test_any_time_is_either_in_range_and_utc_or_a_validation_error(t: datetime) -> None:
    try:
        got = TS.validate_python(t.isoformat())
    except ValidationError as e:
        assert "time out of range" in str(e)
        return
    assert got.tzinfo is not None and got.utcoffset() == timedelta(0)
    assert datetime(1970, 1, 1, tzinfo=UTC) <= got < datetime(2100, 1, 1, tzinfo=UTC)


def test_bounded_dates() -> None:
    assert DAY.validate_python("1950-06-01") == date(1950, 6, 1)
    for bad in ("0001-01-01", "1899-12-31", "2100-01-01", "9999-12-31"):
        with pytest.raises(ValidationError, match="date out of range"):
            DAY.validate_python(bad)
