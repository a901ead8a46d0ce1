"""Event registry: one envelope model per event type, the labelled field tree of each,
and JSON Schema export for publishers in other languages."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, create_model

from schemas.base import CATEGORY_KEY, Strict, cat
from schemas.common import REVEALS_KEY, REVEALS_WHEN_KEY
from schemas.events import DATA_MODELS, SCHEMA_VERSION, Envelope


class UnlabelledField(TypeError):
    """A schema field without a data category (a build error)."""


class BadHint(TypeError):
    """A health hint whose flag is not a field of the same model (a build error)."""


@dataclass(frozen=True)
class FieldNode:
    """One field of an event as the policy sees it.

    ``children`` is set for a nested model (``many`` if it is a list of them); a leaf
    (scalar or list of scalars) has ``children is None``. A free-text leaf whose value may
    reveal a sensitive category names it in ``reveals`` (and, in ``reveals_when``, a
    sibling flag that makes every value reveal it).
    """

    name: str
    path: str
    category: str
    children: tuple[FieldNode, ...] | None = None
    many: bool = False
    reveals: str | None = None
    reveals_when: str | None = None

    def leaves(self) -> typing.Iterator[FieldNode]:
        if self.children is None:
            yield self
        else:
            for c in self.children:
                yield from c.leaves()


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Strip Optional and one level of list; say whether it was a list."""
    many = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, many
            annotation = args[0]
        elif origin in (list, tuple, set, frozenset):
            many = True
            annotation = typing.get_args(annotation)[0]
        elif origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, many


def _category_of(info: Any) -> str | None:
    extra = info.json_schema_extra
    return extra.get(CATEGORY_KEY) if isinstance(extra, dict) else None


def _extra(info: Any, key: str) -> str | None:
    extra = info.json_schema_extra
    value = extra.get(key) if isinstance(extra, dict) else None
    return value if isinstance(value, str) else None


def _walk(model: type[BaseModel], prefix: str, inherited: str | None) -> tuple[FieldNode, ...]:
    nodes = []
    for name, info in model.model_fields.items():
        own = _category_of(info) or inherited
        inner, many = _unwrap(info.annotation)
        path = f"{prefix}{name}" + ("[]" if many else "")
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            children = _walk(inner, path + ".", own)
            nodes.append(FieldNode(name, path, own or "", children, many))
        else:
            if own is None:
                raise UnlabelledField(
                    f"{model.__name__}.{name} ({path}) has no data category: declare it "
                    f"with schemas.base.cat('<fides category>')"
                )
            when = _extra(info, REVEALS_WHEN_KEY)
            if when is not None and when not in model.model_fields:
                raise BadHint(
                    f"{model.__name__}.{name}: its health hint names {when!r}, which is not "
                    f"a field of {model.__name__}"
                )
            nodes.append(FieldNode(name, path, own, None, many, _extra(info, REVEALS_KEY), when))
    return tuple(nodes)


def _envelope_model(event_type: str, data_model: type[Strict]) -> type[Envelope]:
    name = "".join(p.capitalize() for p in event_type.split(".")) + "Event"
    return create_model(
        name,
        __base__=Envelope,
        event_type=(Literal[event_type], cat("system.operations")),
        data=(data_model, ...),
    )


@cache
def event_models() -> dict[str, type[Envelope]]:
    return {t: _envelope_model(t, m) for t, m in DATA_MODELS.items()}


@cache
def field_tree(event_type: str) -> tuple[FieldNode, ...]:
    """The labelled field tree of an event type (raises UnlabelledField)."""
    return _walk(event_models()[event_type], "", None)


def field_categories(event_type: str) -> dict[str, str]:
    """Leaf path -> data category, for every leaf of the event type."""
    return {leaf.path: leaf.category for n in field_tree(event_type) for leaf in n.leaves()}


def event_types() -> list[str]:
    return list(DATA_MODELS)


def schema_fingerprint_material() -> bytes:
    """Bytes that change whenever any event schema changes (part of the policy version)."""
    parts = {t: m.model_json_schema() for t, m in event_models().items()}
    return json.dumps(parts, sort_keys=True).encode()


def export_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for t, model in event_models().items():
        schema = model.model_json_schema()
        schema["$id"] = f"urn:disclosure-gateway:event:{t}:v{SCHEMA_VERSION}"
        schema["title"] = t
        p = out_dir / f"{t}.v{SCHEMA_VERSION}.schema.json"
        p.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(p)
    return written
