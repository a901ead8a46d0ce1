"""Parsing and validating incoming events. Errors name the problem but never echo a value
(error messages end up in dead letters and logs, which must hold no personal data)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.errors import (
    CardNumberFound,
    EventNotJSON,
    EventTooLarge,
    SchemaViolation,
    UnknownEventType,
)
from schemas.registry import FieldNode, event_models, field_tree

_EVENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{8,64}$")


@cache
def known_field_names() -> frozenset[str]:
    """Every field name some event schema declares (safe to echo in errors)."""
    names: set[str] = set()

    def walk(nodes: tuple[FieldNode, ...]) -> None:
        for n in nodes:
            names.add(n.name)
            if n.children:
                walk(n.children)

    for t in event_models():
        walk(field_tree(t))
    return frozenset(names)


def safe_field_name(name: object) -> str:
    """A field name fit for a dead letter or a log: the name itself if a schema declares it,
    else a short digest — publishers can match it, nobody can read a name someone keyed
    their data by (which may be a person's name)."""
    if isinstance(name, str) and name in known_field_names():
        return name
    return "<unknown field #" + hashlib.sha256(str(name).encode()).hexdigest()[:8] + ">"


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    event_type: str
    customer_id: str
    subject_type: str
    occurred_at: datetime  # UTC
    body: dict[str, Any]  # the whole validated envelope, JSON-ready, nulls left out
    # SHA-256 (hex) of the body's canonical JSON (sorted keys): what the event says,
    # whatever bytes, key order or offset the publisher wrote it with.
    event_fp: str = ""

    @property
    def reference_date(self) -> date:
        return self.occurred_at.date()


def event_fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 (hex) of an event body's canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def raw_event_id(raw: bytes) -> str:
    """A stable id for input that has none we can trust (e.g. not JSON)."""
    return "raw-" + hashlib.sha256(raw).hexdigest()[:24]


def _loc(loc: tuple[Any, ...]) -> str:
    parts = []
    for x in loc:
        if isinstance(x, int):
            parts.append(f"[{x}]")
        else:
            parts.append("." + safe_field_name(x))
    return "".join(parts).lstrip(".")


def describe_validation_error(e: ValidationError, limit: int = 5) -> str:
    """'path: message' for the first errors, without the offending input values."""
    msgs = []
    for err in e.errors(include_url=False, include_input=False)[:limit]:
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the schema; unknown fields are never forwarded)"
        msgs.append(f"{_loc(tuple(err['loc']))}: {msg}")
    more = e.error_count() - len(msgs)
    return "; ".join(msgs) + (f"; and {more} more" if more > 0 else "")


# --- card numbers ----------------------------------------------------------------------------

# The cheap test that lets almost every event through without looking further: with
# spaces and dashes deleted and every other non-digit byte made a '.', does a run of 13
# digits remain? (A superset of the candidates; about 1 us per event.)
_DIGITS_ONLY = bytes(0x30 if 0x30 <= i <= 0x39 else 0x2E for i in range(256))
_THIRTEEN = b"0" * 13


def _may_hold_card_number(raw: bytes) -> bool:
    return _THIRTEEN in raw.translate(_DIGITS_ONLY, b" -")


# A maximal run of digit groups joined by single spaces or dashes.
_DIGIT_RUN = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        x = ord(ch) - 48
        if i & 1:
            x = x * 2 - 9 if x > 4 else x * 2
        total += x
    return total % 10 == 0


def _card_prefix(digits: str) -> bool:
    # Card numbers start with 3-9, or with 2221-2720 (Mastercard's 2-series); a number
    # starting with 0, 1 or another 2 is not one (epoch and compact timestamps start so).
    first = digits[0]
    return first >= "3" or (first == "2" and 2221 <= int(digits[:4]) <= 2720)


def _joined(text: str, i: int, outward: int) -> bool:
    """Whether the character at ``i`` glues the run to an identifier: a letter, digit or
    underscore, a '+' before it (a phone number), or a '-' or '.' with a letter or digit
    beyond it ("SO-4111...", a decimal, a dotted version)."""
    if i < 0 or i >= len(text):
        return False
    c = text[i]
    if c.isalnum() or c == "_" or (c == "+" and outward < 0):
        return True
    beyond = i + outward
    return c in "-." and 0 <= beyond < len(text) and text[beyond].isalnum()


def _has_card_number(text: str) -> bool:
    for m in _DIGIT_RUN.finditer(text):
        run = m.group()
        if len(run) < 13:
            continue
        digits = run.replace(" ", "").replace("-", "")
        if not 13 <= len(digits) <= 19 or not _card_prefix(digits):
            continue  # a longer run is some other number, not a card number inside it
        start, end = m.span()
        if _joined(text, start - 1, -1) or _joined(text, end, 1):
            continue
        if _luhn(digits):
            return True
    return False


def _fold(ch: str) -> str:
    category = unicodedata.category(ch)
    if category == "Nd":
        return chr(48 + unicodedata.digit(ch))
    if category == "Zs":
        return " "
    if category == "Pd":
        return "-"
    return ch


def _folded(text: str) -> str:
    """Other scripts' digits as ASCII digits, any space as a space, any dash as '-'."""
    return text if text.isascii() else "".join(c if c.isascii() else _fold(c) for c in text)


def _card_path(obj: Any, path: str = "") -> str | None:
    """The path of the first key or value holding a card number, or None."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{safe_field_name(k)}" if path else safe_field_name(k)
            if isinstance(k, str) and _has_card_number(_folded(k)):
                return here
            found = _card_path(v, here)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _card_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(obj, str):
        return path if _has_card_number(_folded(obj)) else None
    elif isinstance(obj, int) and not isinstance(obj, bool):
        return path if _has_card_number(str(obj)) else None
    return None


def scan_card_numbers(raw: bytes) -> None:
    """Raise :class:`CardNumberFound` if anything in the raw event looks like a payment
    card number: 13 to 19 digits passing the Luhn check and starting as card numbers do,
    with or without single spaces or dashes between digit groups, in any field at any
    depth, in a string, a key or a JSON number.

    A candidate is a maximal run of digit groups: a run of more than 19 digits is another
    number, not a card number inside it, and a run glued to letters or digits (a UUID's or
    hash's hex, "SO-4111...", a decimal, "+49 ..." phone numbers) is part of something else.
    Escaped and non-ASCII text is read decoded, with other scripts' digits, spaces and
    dashes folded to ASCII. The error names the field, never the value."""
    hit = _may_hold_card_number(raw) and _has_card_number(raw.decode("latin-1"))
    if not (hit or b"\\" in raw or not raw.isascii()):
        return
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = None
    where = _card_path(obj) if obj is not None else None
    if not hit and where is None:
        return
    raw_id = obj.get("event_id") if isinstance(obj, dict) else None
    if isinstance(raw_id, str) and _has_card_number(_folded(raw_id)):
        raw_id = None  # the id itself looks like a card number: never echoed
    raise CardNumberFound(
        f"{where or 'a value'}: looks like a payment card number (13 to 19 digits passing "
        f"the Luhn check); send the payment processor's token, brand, last four digits "
        f"and expiry instead, never a card number",
        event_id=raw_id if isinstance(raw_id, str) and _EVENT_ID.match(raw_id) else None,
    )


def parse_event(raw: bytes, max_bytes: int = 256 * 1024) -> Event:
    if len(raw) > max_bytes:
        raise EventTooLarge(
            f"event is {len(raw)} bytes, the limit is {max_bytes} (GATEWAY_MAX_EVENT_BYTES)"
        )
    scan_card_numbers(raw)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise EventNotJSON(f"not valid JSON (UTF-8): {str(e).split(':')[0]}") from None
    if not isinstance(obj, dict):
        raise EventNotJSON(f"an event must be a JSON object, got {type(obj).__name__}")
    # Only an id of the envelope's own shape is echoed (an invalid one may be anything).
    raw_id = obj.get("event_id")
    event_id = raw_id if isinstance(raw_id, str) and _EVENT_ID.match(raw_id) else None
    etype = obj.get("event_type")
    models = event_models()
    if not isinstance(etype, str) or etype not in models:
        shown = (
            "<missing>"
            if etype is None
            else safe_field_name(etype).replace("unknown field", "type")
        )
        raise UnknownEventType(
            f"unknown event type {shown}; known types: {', '.join(sorted(models))}",
            event_id=event_id,
        )
    cls = models[etype]
    try:
        # model_validate / model_dump without their Python wrappers (hot path).
        model = cls.__pydantic_validator__.validate_python(obj)
    except ValidationError as e:
        raise SchemaViolation(
            f"{etype}: {describe_validation_error(e)}", event_id=event_id, event_type=etype
        ) from None
    body = cls.__pydantic_serializer__.to_python(model, mode="json", exclude_none=True)
    return Event(
        event_id=model.event_id,
        event_type=etype,
        customer_id=model.subject.customer_id,
        subject_type=model.subject.type,
        occurred_at=model.occurred_at,
        body=body,
        event_fp=event_fingerprint(body),
    )
