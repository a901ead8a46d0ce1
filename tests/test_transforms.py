from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from datetime import date

import pytest

from gateway.transforms import TRANSFORMS, Ctx

CTX = Ctx(b"k" * 32, date(2026, 5, 4))
OTHER = Ctx(b"j" * 32, date(2026, 5, 4))


def t(name: str, value: object, ctx: Ctx = CTX, **params: object) -> object:
    return TRANSFORMS[name].build(params)(value, ctx)


def test_mask_keeps_last_n() -> None:
    assert t("mask", "4111111111111111", keep=4) == "************1111"
    assert t("mask", "abc", keep=4) == "abc"
    assert t("mask", "secret", keep=0) == "******"


def test_pseudonym_is_keyed_stable_and_per_agent() -> None:
    a = t("pseudonym", "C-1001")
    assert a == t("pseudonym", "C-1001")
    assert a != t("pseudonym", "C-1002")
    assert a != t("pseudonym", "C-1001", OTHER)
    assert isinstance(a, str) and a.startswith("ps_") and len(a) == 3 + 24


def test_generalisations() -> None:
    assert t("zip3", "62704") == "627"
    assert t("year", "1984-05-17") == 1984
    assert t("year", "2026-03-02T09:00:00Z") == 2026
    assert t("age_band", "1984-05-17") == "40-49"
    assert t("age_band", "1984-05-05", width=5) == "40-44"
    assert t("age_band", "1986-05-05") == "30-39"  # birthday not reached yet on 2026-05-04


def test_ip_truncation() -> None:
    assert t("truncate_ip", "203.0.113.57") == "203.0.113.0"
    assert t("truncate_ip", "2001:db8:85a3:1234::8a2e:370:7334") == "2001:db8:85a3::"
    assert t("truncate_ip", "198.51.100.23", v4_prefix=16) == "198.51.0.0"


@pytest.mark.parametrize(("v4", "v6"), [(24, 48), (0, 0), (32, 128), (16, 64), (1, 127)])
def test_ip_truncation_equals_the_network_address(v4: int, v6: int) -> None:
    # The transform masks integers; the standard library's network address is the oracle.
    rng = random.Random(v4 * 1000 + v6)
    for _ in range(500):
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = (
            ipaddress.IPv4Address(rng.getrandbits(32))
            if rng.random() < 0.5
            else ipaddress.IPv6Address(rng.getrandbits(128))
        )
        prefix = v4 if ip.version == 4 else v6
        want = str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)
        assert t("truncate_ip", str(ip), v4_prefix=v4, v6_prefix=v6) == want


def test_pseudonym_is_hmac_sha256_truncated() -> None:
    want = hmac.new(b"k" * 32, b"C-1001", hashlib.sha256).hexdigest()[:24]
    assert t("pseudonym", "C-1001") == "ps_" + want


def test_coarse_location() -> None:
    assert t("coarse_location", 40.712776) == 40.7
    assert t("coarse_location", -74.005974, decimals=2) == -74.01


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("truncate_ip", "not-an-ip"),
        ("zip3", "12"),
        ("year", "someday"),
        ("age_band", "2030-01-01"),
        ("coarse_location", "north"),
    ],
)
def test_bad_values_raise_value_error(name: str, value: object) -> None:
    with pytest.raises(ValueError):
        t(name, value)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("mask", {"keep": -1}),
        ("mask", {"nope": 1}),
        ("pseudonym", {"length": 4}),
        ("coarse_location", {"decimals": 9}),
        ("truncate_ip", {"v4_prefix": 40}),
    ],
)
def test_bad_parameters_are_rejected_at_build(name: str, params: dict) -> None:
    with pytest.raises(ValueError):
        TRANSFORMS[name].build(params)
