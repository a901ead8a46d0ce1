"""Query parameters of the review page, validated before anything reaches the store.

Every value is checked against the shape it must have (an agent name as the policy allows
it, a dotted taxonomy key, a date, ...) and turned into a ``RecordFilter``, whose values
the store only ever uses as bound parameters. Anything else is a ``BadParam`` (HTTP 400)
that names the parameter, so junk never becomes an empty-looking "no records" answer by
accident and never reaches SQL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final

from gateway.ledger.query import RecordFilter

AGENT_RE: Final = re.compile(r"[a-z][a-z0-9_-]{0,62}")  # gateway.policy.NAME_RE
TERM_RE: Final = re.compile(r"[a-z0-9_]{1,64}(?:\.[a-z0-9_]{1,64}){0,15}")  # taxonomy keys
EVENT_TYPE_RE: Final = re.compile(r"[a-z0-9_]{1,64}(?:\.[a-z0-9_]{1,64}){0,7}")
# A subject reference: ``subj_<32 hex>`` from the original pseudonym key, or
# ``subj_<4 hex key id>_<32 hex>`` from a later one (``gateway.pseudonyms``).
SUBJECT_REF_RE: Final = re.compile(r"subj_(?:[0-9a-f]{4}_)?[0-9a-f]{32}")
# One subject's references: one per pseudonym period, so a handful; more is not one subject.
MAX_SUBJECT_REFS: Final = 16
_REF_SEPARATORS: Final = re.compile(r"[\s,]+")
RECORD_ID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
OUTCOMES: Final = ("disclosed", "withheld", "erasure_notice")
PER_PAGE: Final = (25, 50, 100, 200)
PERIODS: Final = ("auto", "day", "month")
MAX_CUSTOMER_ID: Final = 256
MIN_YEAR, MAX_YEAR = 1970, 9998

# Names of the filter parameters, in the order the forms and links use them.
FILTER_KEYS: Final = (
    "subject_ref",
    "agent",
    "category",
    "purpose",
    "outcome",
    "event_type",
    "since",
    "until",
)


class BadParam(ValueError):
    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(f"{name}: {message}")


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _match(query: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> str | None:
    value = _text(query, name)
    if value is not None and not pattern.fullmatch(value):
        raise BadParam(name, f"not {what}")
    return value


def agent_name(value: str) -> str:
    if not AGENT_RE.fullmatch(value):
        raise BadParam("agent", "not an agent name (lower-case letters, digits, '_' and '-')")
    return value


def record_id(value: str) -> str:
    if not RECORD_ID_RE.fullmatch(value):
        raise BadParam("record_id", "not a record id (a UUID)")
    return value


def customer_id(query: Mapping[str, str], name: str = "subject") -> str | None:
    """A customer id as typed by the reviewer: any printable text, bounded."""
    value = _text(query, name)
    if value is None:
        return None
    if len(value) > MAX_CUSTOMER_ID or not value.isprintable():
        raise BadParam(name, f"a customer id is printable text of at most {MAX_CUSTOMER_ID}")
    return value


_REF_SHAPE: Final = "a subject reference (subj_, an optional 4-hex key id and _, 32 hex digits)"


def subject_ref(query: Mapping[str, str], name: str = "subject_ref") -> str | None:
    return _match(query, name, SUBJECT_REF_RE, _REF_SHAPE)


def _all(query: Mapping[str, str], name: str) -> list[str]:
    """Every value of a repeatable parameter (a plain mapping holds one)."""
    getall = getattr(query, "getall", None)
    if getall is not None:
        return [str(v) for v in getall(name, [])]
    value = query.get(name)
    return [] if value is None else [value]


def subject_refs(query: Mapping[str, str], name: str = "subject_ref") -> tuple[str, ...]:
    """One subject's references, of every pseudonym period it had: the parameter may be
    repeated, and each value may hold several separated by spaces or commas (as the
    records form sends them back). Duplicates are dropped, the order kept."""
    refs: list[str] = []
    for value in _all(query, name):
        for item in _REF_SEPARATORS.split(value.strip()):
            if not item:
                continue
            if not SUBJECT_REF_RE.fullmatch(item):
                raise BadParam(name, f"not {_REF_SHAPE}")
            if item not in refs:
                refs.append(item)
    if len(refs) > MAX_SUBJECT_REFS:
        raise BadParam(name, f"at most {MAX_SUBJECT_REFS} subject references (one subject's)")
    return tuple(refs)


def when(query: Mapping[str, str], name: str, *, end_of_day: bool = False) -> datetime | None:
    """A date (YYYY-MM-DD) or ISO date-time; naive values are UTC. As in ``gateway log``,
    a plain ``until`` date means "through that day"."""
    value = _text(query, name)
    if value is None:
        return None
    if len(value) > 40:
        raise BadParam(name, "not a date")
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            moment = datetime(d.year, d.month, d.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(value)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        # Stored times are naive UTC: an offset near the year bounds must still convert.
        moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadParam(name, "not a date (YYYY-MM-DD) or ISO date-time") from None
    return moment


def integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    value = _text(query, name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise BadParam(name, "not a whole number")
    number = int(value)
    if not lo <= number <= hi:
        raise BadParam(name, f"must be between {lo} and {hi}")
    return number


def choice(query: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = _text(query, name)
    if value is None:
        return default
    if value not in choices:
        raise BadParam(name, f"must be one of {', '.join(choices)}")
    return value


def year(query: Mapping[str, str], default: int) -> int:
    return integer(query, "year", default, MIN_YEAR, MAX_YEAR)


@dataclass(frozen=True)
class Filters:
    """The validated filter parameters: the ``RecordFilter`` and the text to redisplay."""

    flt: RecordFilter
    values: dict[str, str]  # parameter -> normalised text, only those given

    def query(self, **extra: str | int) -> dict[str, str]:
        out = dict(self.values)
        out.update({k: str(v) for k, v in extra.items()})
        return out


def filters(query: Mapping[str, str]) -> Filters:
    """The record filter in ``query`` (the customer id, ``subject``, is handled by the
    caller: it needs the pseudonym keys and is swapped for the subject's references of
    every pseudonym period, ``subject_ref`` repeated)."""
    values: dict[str, str] = {}
    refs = subject_refs(query)
    agent = _text(query, "agent")
    if agent is not None:
        agent_name(agent)
    category = _match(query, "category", TERM_RE, "a data category (e.g. user.contact)")
    purpose = _match(query, "purpose", TERM_RE, "a data use (e.g. marketing)")
    outcome = _text(query, "outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise BadParam("outcome", f"must be one of {', '.join(OUTCOMES)}")
    event_type = _match(query, "event_type", EVENT_TYPE_RE, "an event type (e.g. order.placed)")
    since = when(query, "since")
    until = when(query, "until", end_of_day=True)
    if since is not None and until is not None and since >= until:
        raise BadParam("until", "must be after since")
    for name in FILTER_KEYS:
        text = _text(query, name)
        if text is not None:
            values[name] = text
    if refs:
        # Several periods' references travel in links as one value, space-separated.
        values["subject_ref"] = " ".join(refs)
    flt = RecordFilter(
        subject_ref=refs[0] if len(refs) == 1 else None,
        subject_refs=refs if len(refs) > 1 else (),
        agent=agent,
        category=category,
        purpose=purpose,
        outcome=outcome,
        event_type=event_type,
        since=since,
        until=until,
    )
    return Filters(flt, values)
