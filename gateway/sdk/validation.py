"""Local validation for publishers: what is wrong with an event, in the publisher's own words.

The gateway's own errors (dead letters, logs) never show a name the schemas do not know: a
field keyed by a person's name would leak it, so such names become digests there. A
publisher checking its own event before sending it needs the opposite: the field and
event-type names exactly as it wrote them, and the schema rule each one breaks. This module
gives that, deciding validity exactly as the gateway does (it runs the gateway's parser
first and only explains what the parser refused). It never quotes a field's value.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from gateway.errors import EventError, EventNotJSON, SchemaViolation, UnknownEventType
from gateway.events import Event, parse_event
from schemas.registry import event_models

DEFAULT_MAX_BYTES = 256 * 1024


def explain(
    event: Mapping[str, Any] | bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> list[str]:
    """Every problem the gateway would reject ``event`` for, one line each, with full field
    paths (``data.items[0].sku``) and names as given; ``[]`` when the gateway accepts it."""
    raw = _raw(event)
    try:
        parse_event(raw, max_bytes)
    except EventError as e:
        return _explain(raw, e)
    return []


def validate_event(
    event: Mapping[str, Any] | bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Event:
    """The parsed event, or the same :class:`~gateway.errors.EventError` subclass the
    gateway would dead-letter it with, its message listing :func:`explain`'s lines."""
    raw = _raw(event)
    try:
        return parse_event(raw, max_bytes)
    except EventError as e:
        raise type(e)(
            "; ".join(_explain(raw, e)), event_id=e.event_id, event_type=e.event_type
        ) from None


def _raw(event: Mapping[str, Any] | bytes | str) -> bytes:
    if isinstance(event, bytes):
        return event
    if isinstance(event, str):
        return event.encode()
    return orjson.dumps(event)


def _explain(raw: bytes, error: EventError) -> list[str]:
    if isinstance(error, EventNotJSON):
        return [_not_json(raw)]
    if isinstance(error, UnknownEventType):
        return [_unknown_type(orjson.loads(raw).get("event_type"))]
    if isinstance(error, SchemaViolation) and error.event_type in event_models():
        model = event_models()[error.event_type]
        try:
            model.model_validate(orjson.loads(raw))
        except ValidationError as e:
            return [_schema_problem(model, err, error.event_type) for err in e.errors()]
    # Too large, or a rule beyond the schema: the gateway's message names no field.
    return [str(error)]


def _not_json(raw: bytes) -> str:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return f"not valid JSON (UTF-8): {e}"
    return f"an event must be a JSON object, got {_json_type(doc)}"


def _unknown_type(given: object) -> str:
    known = sorted(event_models())
    if given is None:
        return f"event_type: missing; one of: {', '.join(known)}"
    if not isinstance(given, str):
        return f"event_type: must be a string, got {_json_type(given)}; one of: {', '.join(known)}"
    close = difflib.get_close_matches(given, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"event_type: {given!r} is not a known event type{hint}; known: {', '.join(known)}"


def _schema_problem(model: type[BaseModel], err: Any, event_type: str) -> str:
    loc = tuple(err["loc"])
    where = _path(loc)
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        owner = _path(loc[:-1]) or "the event"
        if parent is None:
            return f"{where}: unknown field, not in the {event_type} schema"
        fields = list(parent.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (
            f"{where}: unknown field: {owner} of {event_type} has no field {loc[-1]!r}"
            f"{hint} (its fields: {', '.join(fields)}; unknown fields are never forwarded)"
        )
    if err["type"] == "missing":
        return f"{where}: missing: {event_type} requires this field"
    given = f" (got {_json_type(err['input'])})" if "input" in err else ""
    return f"{where}: {err['msg']}{given}"


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model of the object at ``loc`` (list indexes skipped), or None."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return None
        current = _nested_model(current.model_fields[part].annotation)
    return current


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model inside Optional[...] / list[...] / Annotated[...], if there is one."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, set, frozenset, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _nested_model(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _json_type(value: object) -> str:
    """The JSON name of a value's type (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
