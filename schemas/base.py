"""Building blocks for event schemas: every field is declared with ``cat(CATEGORY)``.

A field that holds a nested model may carry a category for its whole subtree; a leaf
without a category of its own takes the nearest labelled ancestor's. A leaf with no
category anywhere above it is a build error (see ``schemas.registry.field_categories``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

CATEGORY_KEY = "x-data-category"


class Strict(BaseModel):
    # Unknown fields are rejected, never forwarded: nothing the policy has not classified
    # can reach an agent.
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=10_000)


def cat(category: str, default: Any = ..., **kwargs: Any) -> Any:
    """A pydantic ``Field`` labelled with a data category."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[CATEGORY_KEY] = category
    return Field(default, json_schema_extra=extra, **kwargs)


# --- bounded times --------------------------------------------------------------------
# Every timestamp an event carries is bounded and normalised to UTC on input: a time no
# real event has (year 1, year 9999) is a schema violation rather than a value that
# overflows when some later step converts it, and every stored time compares and sorts
# the same way whatever offset the publisher wrote.

TIME_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX: Final = datetime(2100, 1, 1, tzinfo=UTC)
# Dates reach further back than event times: a date of birth before 1970 is ordinary.
DATE_MIN: Final = date(1900, 1, 1)
DATE_MAX: Final = TIME_MAX.date()


def _bounded_utc(value: datetime) -> datetime:
    # Compared before converting: converting year 1 or 9999 with an offset overflows.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not TIME_MIN <= aware < TIME_MAX:
        raise ValueError("time out of range: it must be from 1970-01-01 to before 2100-01-01 (UTC)")
    return aware.astimezone(UTC)


def _bounded_date(value: date) -> date:
    if not DATE_MIN <= value < DATE_MAX:
        raise ValueError("date out of range: it must be from 1900-01-01 to before 2100-01-01")
    return value


# A point in time: 1970-01-01 <= t < 2100-01-01, a time without an offset taken as UTC,
# stored and serialised in UTC.
Timestamp = Annotated[datetime, AfterValidator(_bounded_utc)]
# A calendar date: 1900-01-01 <= d < 2100-01-01.
BoundedDate = Annotated[date, AfterValidator(_bounded_date)]
