"""Parsing and validating incoming events. Errors name the problem but never echo a value
(error messages end up in dead letters and logs, which must hold no personal data)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any

import orjson
from pydantic import ValidationError

from gateway.errors import EventNotJSON, EventTooLarge, SchemaViolation, UnknownEventType
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
    occurred_at: datetime
    body: dict[str, Any]  # the whole validated envelope, JSON-ready, nulls left out

    @property
    def reference_date(self) -> date:
        return self.occurred_at.date()


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


def parse_event(raw: bytes, max_bytes: int = 256 * 1024) -> Event:
    if len(raw) > max_bytes:
        raise EventTooLarge(f"event is {len(raw)} bytes, the limit is {max_bytes} "
                            f"(GATEWAY_MAX_EVENT_BYTES)")
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
        shown = "<missing>" if etype is None else safe_field_name(etype).replace(
            "unknown field", "type")
        raise UnknownEventType(
            f"unknown event type {shown}; known types: {', '.join(sorted(models))}",
            event_id=event_id)
    cls = models[etype]
    try:
        # model_validate / model_dump without their Python wrappers (hot path).
        model = cls.__pydantic_validator__.validate_python(obj)
    except ValidationError as e:
        raise SchemaViolation(f"{etype}: {describe_validation_error(e)}", event_id=event_id,
                              event_type=etype) from None
    body = cls.__pydantic_serializer__.to_python(model, mode="json", exclude_none=True)
    return Event(
        event_id=model.event_id,
        event_type=etype,
        customer_id=model.subject.customer_id,
        subject_type=model.subject.type,
        occurred_at=model.occurred_at,
        body=body,
    )
