"""JSON and base64 as the key envelopes and messages write them."""

from __future__ import annotations

import base64
from typing import Any, Final

import orjson

_SORT: Final = orjson.OPT_SORT_KEYS


def _canon(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj, option=_SORT)


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
