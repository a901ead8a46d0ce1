"""Realistic sample events: a scripted scenario that exercises every policy rule (the bundled
sample file is generated from it) and a seeded random mix for load and benchmarks."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

_NS = uuid.UUID("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _ev(
    n: int,
    etype: str,
    cid: str,
    stype: str,
    at: datetime,
    data: dict[str, Any],
    seed: str = "scenario",
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid5(_NS, f"{seed}:{n}")),
        "event_type": etype,
        "schema_version": 1,
        "occurred_at": at.isoformat().replace("+00:00", "Z"),
        "subject": {"customer_id": cid, "type": stype},
        "data": data,
    }


def _addr(street: str, city: str, state: str, zip_: str, kind: str = "shipping") -> dict:
    return {
        "kind": kind,
        "street": street,
        "city": city,
        "state": state,
        "postal_code": zip_,
        "country": "US",
    }


def _rx(patient: str, dob: str) -> dict[str, Any]:
    return {
        "patient": {"name": patient, "date_of_birth": dob},
        "right_eye": {"sphere": -2.25, "cylinder": -0.75, "axis": 180},
        "left_eye": {"sphere": -2.0, "cylinder": -0.5, "axis": 170},
        "pupillary_distance": 63.0,
        "prescriber": "Dr. Ana Ruiz, OD",
    }


def _card(holder: str) -> dict[str, Any]:
    """A card as the payment processor's tokenisation gives it (never its number)."""
    token = "tok_" + hashlib.sha256(holder.encode()).hexdigest()[:24]
    return {
        "method": "card",
        "card": {"token": token, "brand": "visa", "last4": "1111", "expiry": "09/28"},
    }


# An Rx order: prescription lenses and a frame. Without a prescription: a frame and a case.
_RX_ITEMS = [
    {
        "sku": "SKU-20167",
        "description": "Progressive lenses 1.67, anti-reflective",
        "quantity": 1,
        "unit_price": 289.0,
        "weight_g": 40,
        "rx": True,
    },
    {
        "sku": "SKU-31052",
        "description": "Titanium frame 52-18",
        "quantity": 1,
        "unit_price": 149.0,
        "weight_g": 180,
    },
]
_PLAIN_ITEMS = [
    {
        "sku": "SKU-31052",
        "description": "Titanium frame 52-18",
        "quantity": 1,
        "unit_price": 149.0,
        "weight_g": 180,
    },
    {
        "sku": "SKU-50010",
        "description": "Hard case with microfiber cloth",
        "quantity": 1,
        "unit_price": 19.0,
        "weight_g": 120,
    },
]


def _order(
    oid: str,
    first: str,
    last: str,
    addr: dict,
    email: str,
    phone: str,
    rx: dict | None = None,
    items: list | None = None,
) -> dict[str, Any]:
    items = items or [dict(i) for i in (_RX_ITEMS if rx else _PLAIN_ITEMS)]
    d: dict[str, Any] = {
        "order_id": oid,
        "items": items,
        "currency": "USD",
        "total": round(sum(i["quantity"] * i["unit_price"] for i in items), 2),
        "recipient": {"first": first, "last": last},
        "shipping_address": addr,
        "billing_address": {**addr, "kind": "billing"},
        "contact_email": email,
        "contact_phone": phone,
        "payment": _card(f"{first} {last}"),
    }
    if rx:
        d["prescription"] = rx
    return d


def _visit(session: str, ip: str, gpc: bool = False, pages: list | None = None) -> dict:
    return {
        "session_id": session,
        "pages": pages or ["/", "/lenses/progressive", "/frames/titanium", "/cart"],
        "referrer": "https://www.example-search.com/?q=progressive+lenses",
        "duration_s": 312,
        "visit_number": 3,
        "search_queries": ["progressive lenses", "titanium frame"],
        "cart": [{"sku": "SKU-20167", "quantity": 1}],
        "device": {
            "ip": ip,
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) "
            "AppleWebKit/605.1.15 Safari/605.1.15",
            "language": "en-US",
            "hardware_model": "MacBookPro18,3",
            "os_version": "macOS 14.5",
        },
        "location": {"lat": 40.712776, "lon": -74.005974, "accuracy_m": 12.0},
        "gpc": gpc,
    }


def scenario() -> list[dict[str, Any]]:
    """The bundled sample: every rule of the policy on concrete customers."""
    evs: list[dict[str, Any]] = []
    t = T0

    def add(etype: str, cid: str, stype: str, data: dict[str, Any]) -> None:
        nonlocal t
        t += timedelta(minutes=7)
        evs.append(_ev(len(evs), etype, cid, stype, t, data))

    # Alice: consumer, Rx order, no opt-in for sensitive data -> nobody gets the Rx.
    alice_addr = _addr("12 Orchard Lane", "Springfield", "IL", "62704")
    add(
        "customer.registered",
        "C-1001",
        "consumer",
        {
            "name": {"first": "Alice", "last": "Moreno"},
            "addresses": [alice_addr],
            "phones": ["+1-217-555-0142"],
            "emails": ["alice.moreno@example.com"],
            "date_of_birth": "1984-05-17",
            "username": "amoreno",
        },
    )
    add("site.visit", "C-1001", "consumer", _visit("sess-a1f3", "203.0.113.57"))
    add(
        "order.placed",
        "C-1001",
        "consumer",
        _order(
            "SO-50001",
            "Alice",
            "Moreno",
            alice_addr,
            "alice.moreno@example.com",
            "+1-217-555-0142",
            rx=_rx("Alice Moreno", "1984-05-17"),
        ),
    )
    add(
        "payment.requested",
        "C-1001",
        "consumer",
        {
            "order_id": "SO-50001",
            "amount": 438.0,
            "currency": "USD",
            "payer": {"first": "Alice", "last": "Moreno"},
            "billing_address": {**alice_addr, "kind": "billing"},
            "payment": _card("Alice Moreno"),
        },
    )
    add(
        "payment.settled",
        "C-1001",
        "consumer",
        {
            "order_id": "SO-50001",
            "amount": 438.0,
            "currency": "USD",
            "status": "settled",
            "payment_reference": "PAY-8842113",
            "card_last4": "1111",
        },
    )
    add(
        "order.shipped",
        "C-1001",
        "consumer",
        {
            "order_id": "SO-50001",
            "carrier": "Parcel Express",
            "tracking_number": "PX7781233901",
            "shipped_at": (t + timedelta(days=2)).isoformat(),
            "shipping_address": alice_addr,
            "recipient": {"first": "Alice", "last": "Moreno"},
            "contact_email": "alice.moreno@example.com",
        },
    )

    # Bob: consumer who opts in to marketing and explicitly allows the email agent to
    # see his prescription (copy in the order confirmation).
    bob_addr = _addr("88 Harbor Road", "Portland", "ME", "04101")
    add(
        "customer.registered",
        "C-1002",
        "consumer",
        {
            "name": {"first": "Bob", "last": "Chen"},
            "addresses": [bob_addr],
            "emails": ["bob.chen@example.net"],
            "phones": ["+1-207-555-0199"],
        },
    )
    add(
        "consent.changed",
        "C-1002",
        "consumer",
        {
            "marketing": "opt_in",
            "source": "account",
            "sensitive": [{"scope": "agent", "target": "email", "granted": True}],
        },
    )
    add(
        "order.placed",
        "C-1002",
        "consumer",
        _order(
            "SO-50002",
            "Bob",
            "Chen",
            bob_addr,
            "bob.chen@example.net",
            "+1-207-555-0199",
            rx=_rx("Bob Chen", "1979-11-02"),
        ),
    )

    # Carol: unsubscribes and objects to processing on legitimate interests: her profile
    # update is not sent for marketing and analytics gets nothing of her order; its
    # confirmation, delivery and payment (contract) still flow.
    carol_addr = _addr("4 Elm Court", "Austin", "TX", "78701")
    add(
        "customer.registered",
        "C-1003",
        "consumer",
        {
            "name": {"first": "Carol", "last": "Diaz"},
            "emails": ["carol.diaz@example.org"],
            "addresses": [carol_addr],
        },
    )
    add(
        "consent.changed",
        "C-1003",
        "consumer",
        {"marketing": "opt_out", "objection": True, "source": "account"},
    )
    add(
        "customer.updated",
        "C-1003",
        "consumer",
        {"name": {"first": "Carol", "last": "Diaz"}, "emails": ["carol.d@example.org"]},
    )
    add(
        "order.placed",
        "C-1003",
        "consumer",
        _order("SO-50003", "Carol", "Diaz", carol_addr, "carol.d@example.org", "+1-512-555-0123"),
    )

    # Dan: his browser sends Global Privacy Control: marketing stops from then on.
    add(
        "customer.registered",
        "C-1004",
        "consumer",
        {"name": {"first": "Dan", "last": "Evans"}, "emails": ["dan.evans@example.com"]},
    )
    add(
        "site.visit",
        "C-1004",
        "consumer",
        _visit("sess-d9e2", "2001:db8:85a3::8a2e:370:7334", gpc=True),
    )
    add(
        "customer.updated",
        "C-1004",
        "consumer",
        {
            "name": {"first": "Dan", "last": "Evans"},
            "title": "Teacher",
            "emails": ["dan.evans@example.com"],
        },
    )

    # Lensworks: a business that agreed to marketing and reseller sharing -> reseller.
    lw_addr = _addr("500 Industrial Pkwy", "Rochester", "NY", "14607", "physical")
    add(
        "consent.changed",
        "B-2001",
        "business",
        {"marketing": "opt_in", "reseller_sharing": True, "source": "account"},
    )
    add(
        "customer.registered",
        "B-2001",
        "business",
        {
            "name": {"first": "Grace", "last": "Hopper"},
            "title": "Purchasing Manager",
            "company": "Lensworks Optical LLC",
            "addresses": [lw_addr],
            "phones": ["+1-585-555-0100"],
            "fax": ["+1-585-555-0101"],
            "emails": ["purchasing@lensworks.example"],
            "fein": "12-3456789",
            "resale_numbers": ["NY-RS-448812"],
            "trade_references": ["Acme Frames Inc."],
            "payment_preferences": {"method": "net_terms", "terms": "Net 30"},
        },
    )
    add(
        "order.placed",
        "B-2001",
        "business",
        _order(
            "SO-50004",
            "Grace",
            "Hopper",
            lw_addr,
            "purchasing@lensworks.example",
            "+1-585-555-0100",
            items=[
                {
                    "sku": "SKU-20150-B50",
                    "description": "Single-vision blanks 1.50, box of 50",
                    "quantity": 10,
                    "unit_price": 120.0,
                    "weight_g": 2500,
                }
            ],
        ),
    )

    # Clearview: a business without marketing consent -> never reaches the reseller.
    add(
        "customer.registered",
        "B-2002",
        "business",
        {
            "name": {"first": "Henry", "last": "Ito"},
            "title": "Owner",
            "company": "Clearview Eyecare Inc.",
            "emails": ["henry@clearview.example"],
            "fein": "98-7654321",
        },
    )

    # Erin: orders, then asks to be forgotten; later events about her go nowhere.
    erin_addr = _addr("77 Sunset Blvd", "Los Angeles", "CA", "90028")
    add(
        "customer.registered",
        "C-1005",
        "consumer",
        {
            "name": {"first": "Erin", "last": "Fox"},
            "emails": ["erin.fox@example.com"],
            "addresses": [erin_addr],
        },
    )
    add("site.visit", "C-1005", "consumer", _visit("sess-e5f1", "198.51.100.23"))
    add(
        "order.placed",
        "C-1005",
        "consumer",
        _order("SO-50005", "Erin", "Fox", erin_addr, "erin.fox@example.com", "+1-323-555-0177"),
    )
    add(
        "support.ticket",
        "C-1005",
        "consumer",
        {
            "ticket_id": "T-9001",
            "channel": "email",
            "subject_line": "Please delete my data",
            "message": "I would like my account and data removed.",
            "contact_email": "erin.fox@example.com",
        },
    )
    add("erasure.requested", "C-1005", "consumer", {"request_id": "DSR-301", "channel": "email"})
    add(
        "order.shipped",
        "C-1005",
        "consumer",
        {
            "order_id": "SO-50005",
            "carrier": "Parcel Express",
            "tracking_number": "PX7781239999",
            "shipped_at": (t + timedelta(hours=5)).isoformat(),
            "shipping_address": erin_addr,
            "recipient": {"first": "Erin", "last": "Fox"},
        },
    )
    # Dana opens a trade account: from now on a business customer (the one event that
    # changes a subject's type; later events must declare the new type).
    add("customer.type_changed", "C-1004", "business", {"type": "business"})
    return evs


_FIRST = [
    "Maya",
    "Liam",
    "Noah",
    "Olivia",
    "Ava",
    "Ethan",
    "Zoe",
    "Lucas",
    "Mia",
    "Omar",
    "Priya",
    "Kenji",
    "Sofia",
    "Mateo",
    "Amara",
    "Jonas",
]
_LAST = [
    "Garcia",
    "Smith",
    "Nguyen",
    "Kowalski",
    "Okafor",
    "Rossi",
    "Tanaka",
    "Meyer",
    "Haddad",
    "Silva",
    "Johansson",
    "Patel",
]
_CITIES = [
    ("Springfield", "IL", "62704"),
    ("Denver", "CO", "80202"),
    ("Seattle", "WA", "98101"),
    ("Miami", "FL", "33130"),
    ("Boston", "MA", "02108"),
]


def random_events(
    n: int, seed: int = 7, customers: int = 1000, pad: int = 0
) -> Iterator[dict[str, Any]]:
    """A realistic mix: page views dominate, then orders and their payments/shipments,
    with some profile and consent traffic. ``pad`` adds that many characters of order
    notes (to study throughput by event size)."""
    rnd = random.Random(seed)
    t = T0
    for i in range(n):
        c = rnd.randrange(customers)
        business = c % 5 == 0
        cid = f"{'B' if business else 'C'}-{100000 + c}"
        stype = "business" if business else "consumer"
        first, last = _FIRST[c % len(_FIRST)], _LAST[(c // 3) % len(_LAST)]
        city, st, zp = _CITIES[c % len(_CITIES)]
        addr = _addr(f"{c % 900 + 1} Main Street", city, st, zp)
        email = f"{first.lower()}.{last.lower()}{c}@example.com"
        t += timedelta(seconds=rnd.randint(1, 30))
        r = rnd.random()
        if r < 0.40:
            etype, data = (
                "site.visit",
                _visit(
                    f"sess-{c:06d}-{i % 7}", f"198.51.{c % 250}.{i % 250}", gpc=rnd.random() < 0.03
                ),
            )
        elif r < 0.60:
            rx = _rx(f"{first} {last}", "1980-01-01") if rnd.random() < 0.3 else None
            etype, data = (
                "order.placed",
                _order(f"SO-{i}", first, last, addr, email, "+1-555-555-0100", rx=rx),
            )
            if pad:
                data["notes"] = ("x" * pad)[:5000]
        elif r < 0.70:
            etype, data = (
                "order.shipped",
                {
                    "order_id": f"SO-{i}",
                    "carrier": "Parcel Express",
                    "tracking_number": f"PX{i:010d}",
                    "shipped_at": t.isoformat(),
                    "shipping_address": addr,
                    "recipient": {"first": first, "last": last},
                    "contact_email": email,
                },
            )
        elif r < 0.78:
            etype, data = (
                "payment.requested",
                {
                    "order_id": f"SO-{i}",
                    "amount": 199.0,
                    "currency": "USD",
                    "payer": {"first": first, "last": last},
                    "billing_address": {**addr, "kind": "billing"},
                    "payment": _card(f"{first} {last}"),
                },
            )
        elif r < 0.84:
            etype, data = (
                "payment.settled",
                {
                    "order_id": f"SO-{i}",
                    "amount": 199.0,
                    "currency": "USD",
                    "status": "settled",
                    "payment_reference": f"PAY-{i}",
                    "card_last4": "1111",
                },
            )
        elif r < 0.90:
            etype = rnd.choice(["customer.registered", "customer.updated"])
            data = {
                "name": {"first": first, "last": last},
                "emails": [email],
                "addresses": [addr],
                "phones": ["+1-555-555-0100"],
            }
            if business:
                data.update(
                    company=f"{last} Optical Supply",
                    title="Buyer",
                    fein=f"{c % 90 + 10}-{1000000 + c}",
                )
        elif r < 0.96:
            etype, data = (
                "consent.changed",
                {
                    "marketing": rnd.choice(["opt_in", "opt_out"]),
                    "reseller_sharing": business and rnd.random() < 0.5,
                    "sensitive": [
                        {"scope": "agent", "target": "email", "granted": rnd.random() < 0.5}
                    ],
                },
            )
        else:
            etype, data = (
                "support.ticket",
                {
                    "ticket_id": f"T-{i}",
                    "channel": "chat",
                    "subject_line": "Order status",
                    "message": "Where is my order?",
                    "contact_email": email,
                },
            )
        yield _ev(i, etype, cid, stype, t, data, seed=f"random:{seed}")


def to_jsonl(events: list[dict[str, Any]] | Iterator[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)
