"""Building blocks for event schemas: every field is declared with ``cat(CATEGORY)``.

A field that holds a nested model may carry a category for its whole subtree; a leaf
without a category of its own takes the nearest labelled ancestor's. A leaf with no
category anywhere above it is a build error (see ``schemas.registry.field_categories``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CATEGORY_KEY = "x-data-category"


class Strict(BaseModel):
    # Unknown fields are rejected, never forwarded (SPEC §4).
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=10_000)


def cat(category: str, default: Any = ..., **kwargs: Any) -> Any:
    """A pydantic ``Field`` labelled with a data category."""
    extra = dict(kwargs.pop("json_schema_extra", None) or {})
    extra[CATEGORY_KEY] = category
    return Field(default, json_schema_extra=extra, **kwargs)
