"""The card-number scan over raw events: what it finds (Luhn-valid 13-19 digits, any
separators, any field, escaped or not) and what it leaves alone (timestamps, phone numbers,
UUIDs, order ids, longer numbers), and that it never echoes a value."""

from __future__ import annotations

import orjson
import pytest

from gateway.dev.samples import random_events, scenario
from gateway.errors import CardNumberFound
from gateway.events import parse_event, scan_card_numbers

# Published test card numbers of the major brands (Luhn-valid).
CARDS = [
    "4111111111111111",  # Visa
    "4222222222222",  # Visa, 13 digits
    "5555555555554444",  # Mastercard
    "2223003122003222",  # Mastercard 2-series
    "378282246310005",  # American Express, 15 digits
    "6011000990139424",  # Discover
    "3056930009020004",  # Diners
    "3530111333300000",  # JCB
    "6200000000000005",  # UnionPay
    "6759649826438453",  # Maestro
    "4111111111111111110",  # 19 digits
]


def found(value: object) -> bool:
    try:
        scan_card_numbers(orjson.dumps({"event_id": "evt-scan-0001", "data": {"x": value}}))
    except CardNumberFound:
        return True
    return False


def grouped(number: str, sep: str, size: int = 4) -> str:
    return sep.join(number[i : i + size] for i in range(0, len(number), size))


@pytest.mark.parametrize("card", CARDS)
def test_finds_card_numbers_plain_spaced_dashed_and_as_numbers(card: str) -> None:
    assert found(card)
    assert found(grouped(card, " "))
    assert found(grouped(card, "-"))
    assert found(f"my card is {grouped(card, ' ')}, thanks")
    assert found([{"deep": [f"({card})"]}])
    assert found(int(card))


def test_finds_card_numbers_in_keys_escapes_and_other_scripts() -> None:
    raw = b'{"data": {"4111 1111 1111 1111": 1}}'
    with pytest.raises(CardNumberFound):
        scan_card_numbers(raw)
    # JSON escapes: a newline before the number, digits spelled as \\u escapes.
    for raw in (
        b'{"n": "card:\\n4111111111111111"}',
        b'{"n": "\\u0034111111111111111"}',
        b'{"n": "4111\\u00a01111\\u00a01111\\u00a01111"}',
    ):
        with pytest.raises(CardNumberFound):
            scan_card_numbers(raw)
    # Fullwidth digits and an en dash, as pasted from a formatted document.
    fancy = "\uff14\uff11\uff11\uff11\u2013" + "1111\u20131111\u20131111"
    assert found(fancy)


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111112",  # fails the Luhn check
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits: some other number
        "2026-03-02 4111 1111 1111 1111",  # one run of 24 digits (a run > 19 is not a card)
        "2026-03-02T09:07:00.123456Z",
        "20260302090700123",  # a compact timestamp
        1714824000123,  # epoch milliseconds
        1714824000123456,  # epoch microseconds
        "+1-217-555-0142",
        "+49 151 12345678",
        "+44 7911 123456",
        "0049 151 1234 5678",
        "9e698372-aac4-5b06-829d-66298e3ccb60",
        "12345678-1234-1234-abcd-123456789012",
        "41111111-1111-1111-1111-111111111111",
        "SO-4111111111111111",
        "ORD_5555555555554444",
        "order 4111111111111111-B",
        "sha256:4111111111111111aa",
        "v1.4111111111111111",
        "4111111111111111.50",
        "tok_4111111111111111",
        "Titanium frame 52-18, 3 items at 149.00",
    ],
)
def test_leaves_other_numbers_alone(value: object) -> None:
    assert not found(value)


def test_the_error_names_the_field_and_the_event_never_the_value() -> None:
    ev = next(e for e in scenario() if e["event_type"] == "order.placed")
    ev["data"]["notes"] = "call me, card 5555 5555 5555 4444"
    with pytest.raises(CardNumberFound) as e:
        parse_event(orjson.dumps(ev))
    assert e.value.reason == "card_number"
    assert e.value.event_id == ev["event_id"]
    assert str(e.value).startswith("data.notes: looks like a payment card number")
    assert "5555" not in str(e.value) and "4444" not in str(e.value)


def test_no_sample_or_generated_event_is_taken_for_a_card() -> None:
    for e in [*scenario(), *random_events(3000, seed=5, customers=500)]:
        scan_card_numbers(orjson.dumps(e))


def test_an_event_id_that_looks_like_a_card_number_is_not_echoed() -> None:
    with pytest.raises(CardNumberFound) as e:
        scan_card_numbers(orjson.dumps({"event_id": "40000222223333", "data": {}}))
    assert e.value.event_id is None
    assert str(e.value).startswith("event_id: ")
