"""Transforms: what an agent gets instead of a raw value.

Each transform is a small named factory: ``build(**params)`` validates its parameters once
(at policy load) and returns a function ``(value, ctx) -> value`` applied per field on the
hot path. A transform that cannot handle a value raises ``ValueError``; the engine then
removes the field (fail closed) rather than sending it raw.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from gateway.crypto.mac import hmac_sha256

Fn = Callable[[Any, "Ctx"], Any]


@dataclass(frozen=True, slots=True)
class Ctx:
    """Per-(event, agent) context a transform may need."""

    pseudonym_key: bytes  # the agent's own key: pseudonyms don't join across agents
    reference: date  # the event's date, for age bands


@dataclass(frozen=True)
class Transform:
    name: str
    description: str
    factory: Callable[..., Fn]

    def build(self, params: dict[str, Any]) -> Fn:
        try:
            return self.factory(**params)
        except TypeError as e:
            raise ValueError(f"transform {self.name!r}: bad parameters {params!r} ({e})") from e


def _mask(keep: int = 4, char: str = "*") -> Fn:
    if keep < 0 or len(char) != 1:
        raise ValueError("mask needs keep >= 0 and a one-character 'char'")

    def mask(value: Any, ctx: Ctx) -> str:
        s = str(value)
        shown = s[-keep:] if keep else ""
        return char * (len(s) - len(shown)) + shown

    return mask


def _pseudonym(length: int = 24) -> Fn:
    if not 8 <= length <= 64:
        raise ValueError("pseudonym length must be between 8 and 64 hex characters")

    def pseudonym(value: Any, ctx: Ctx) -> str:
        digest = hmac_sha256(ctx.pseudonym_key).hexdigest(str(value).encode())
        return "ps_" + digest[:length]

    return pseudonym


def _zip3() -> Fn:
    def zip3(value: Any, ctx: Ctx) -> str:
        s = str(value).strip()
        if len(s) < 3:
            raise ValueError("postal code too short to generalise")
        return s[:3]

    return zip3


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _year() -> Fn:
    def year(value: Any, ctx: Ctx) -> int:
        return _as_date(value).year

    return year


def _age_band(width: int = 10) -> Fn:
    if width < 1:
        raise ValueError("age_band width must be >= 1")

    def age_band(value: Any, ctx: Ctx) -> str:
        born, ref = _as_date(value), ctx.reference
        age = ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))
        if age < 0:
            raise ValueError("date of birth after the event")
        low = age // width * width
        return f"{low}-{low + width - 1}"

    return age_band


def _truncate_ip(v4_prefix: int = 24, v6_prefix: int = 48) -> Fn:
    if not (0 <= v4_prefix <= 32 and 0 <= v6_prefix <= 128):
        raise ValueError("truncate_ip prefixes out of range")

    v4_mask = (2**32 - 1) ^ (2 ** (32 - v4_prefix) - 1)
    v6_mask = (2**128 - 1) ^ (2 ** (128 - v6_prefix) - 1)

    def truncate_ip(value: Any, ctx: Ctx) -> str:
        # The network address by masking the integer: parsing the address again as a
        # network cost twice the parse itself.
        ip = ipaddress.ip_address(str(value))
        if ip.version == 4:
            return str(ipaddress.IPv4Address(int(ip) & v4_mask))
        return str(ipaddress.IPv6Address(int(ip) & v6_mask))

    return truncate_ip


def _coarse_location(decimals: int = 1) -> Fn:
    if not 0 <= decimals <= 3:
        raise ValueError("coarse_location keeps 0 to 3 decimals (3 is about 100 m)")

    def coarse_location(value: Any, ctx: Ctx) -> float:
        return round(float(value), decimals)

    return coarse_location


def _drop() -> Fn:
    def drop(value: Any, ctx: Ctx) -> Any:  # never called: the engine removes the field
        raise AssertionError("drop is handled by the engine")

    return drop


TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in (
        Transform("drop", "remove the field", _drop),
        Transform("mask", "replace all but the last N characters", _mask),
        Transform("pseudonym", "keyed HMAC pseudonym, a different key per agent", _pseudonym),
        Transform("zip3", "keep the first 3 characters of a postal code", _zip3),
        Transform("year", "keep only the year of a date", _year),
        Transform("age_band", "age band from a date of birth, at the event's date", _age_band),
        Transform("truncate_ip", "IPv4 to /24, IPv6 to /48", _truncate_ip),
        Transform("coarse_location", "round coordinates (1 decimal ~ 11 km)", _coarse_location),
    )
}
