"""Every rule of the privacy policy on concrete events (sensitive data, consent, marketing,
resellers, pseudonyms, erasure), through the full core (decide, seal, open)."""

from __future__ import annotations

import copy

import orjson
import pytest

from schemas.registry import field_categories
from tests.conftest import Run, event, walk_values

RX_VALUES = {-2.25, -0.75, -2.0, -0.5, 63.0, "Dr. Ana Ruiz, OD"}


def consent(data: dict, **kw: object) -> dict:
    return event("consent.changed", {"source": "account", **data}, n=900, **kw)  # type: ignore[arg-type]


def has_rx(payload: dict | None) -> bool:
    if payload is None:
        return False
    text = orjson.dumps(payload).decode()
    return (
        "prescription" in text.replace('"removed"', "")
        and any(v in walk_values(payload.get("data", {})) for v in RX_VALUES)
    ) or "prescription" in payload.get("data", {})


def test_prescription_never_reaches_shipping_even_with_opt_in(run: Run, sample: dict) -> None:
    run.send(
        consent(
            {"sensitive": [{"scope": "agent", "target": "shipping", "granted": True}]},
            customer="C-1001",
        )
    )
    out = run.send(sample["order.placed"])
    shipped = run.received(out, "shipping")
    assert shipped is not None and "prescription" not in shipped["data"]
    assert "data.prescription" in shipped["_gateway"]["removed"]
    rec = run.record(out, "shipping")
    assert "user.health_and_medical.vision_prescription" in rec.categories_removed


def test_prescription_reaches_nobody_without_opt_in(run: Run, sample: dict) -> None:
    out = run.send(sample["order.placed"])
    assert sample["order.placed"]["data"]["prescription"]
    assert {m.agent for m in out.messages} == {"shipping", "payments", "email"}
    for m in out.messages:
        payload = run.received(out, m.agent)
        assert payload is not None
        assert "prescription" not in payload["data"], m.agent
        assert not set(walk_values(payload["data"])) & RX_VALUES, m.agent
        rec = run.record(out, m.agent)
        assert not any(c.startswith("user.health_and_medical") for c in rec.categories_sent)
    # Analytics gets aggregates only; the Rx line does not even enter them.
    rec = run.record(out, "analytics")
    assert rec.outcome == "contributed"
    assert not any(c.startswith("user.health_and_medical") for c in rec.categories_sent)
    (c,) = out.contributions
    assert [dims for dims, _ in c.rows["product_categories"]] == [("frames",)]


@pytest.mark.parametrize(
    "grant",
    [
        {"scope": "agent", "target": "email", "granted": True},
        {"scope": "purpose", "target": "essential.service.notifications.email", "granted": True},
    ],
)
def test_prescription_reaches_email_with_explicit_opt_in_only(
    run: Run, sample: dict, grant: dict
) -> None:
    run.send(consent({"sensitive": [grant]}, customer="C-1001"))
    out = run.send(sample["order.placed"])
    mail = run.received(out, "email")
    assert mail is not None
    assert mail["data"]["prescription"]["right_eye"]["sphere"] == -2.25
    # The opt-in covers the email agent (or its purpose), nobody else.
    for other in ("shipping", "payments"):
        assert "prescription" not in run.received(out, other)["data"]  # type: ignore[index]
    (c,) = out.contributions  # analytics: the Rx line stays out of the aggregates
    assert [dims for dims, _ in c.rows["product_categories"]] == [("frames",)]
    rec = run.record(out, "email")
    assert any(c.startswith("sensitive_opt_in:") for c in rec.consent)
    # Patient identity is a different sensitive category the email purpose doesn't permit.
    assert "patient" not in mail["data"]["prescription"]


def test_revoked_sensitive_opt_in_stops_the_flow(run: Run, sample: dict) -> None:
    grant = {"scope": "agent", "target": "email"}
    run.send(consent({"sensitive": [{**grant, "granted": True}]}, customer="C-1001"))
    run.send(consent({"sensitive": [{**grant, "granted": False}]}, customer="C-1001"))
    out = run.send(sample["order.placed"])
    assert "prescription" not in run.received(out, "email")["data"]  # type: ignore[index]


def test_consumer_never_reaches_reseller(run: Run, sample: dict) -> None:
    run.send(consent({"marketing": "opt_in", "reseller_sharing": True}, customer="C-1001"))
    out = run.send(sample["customer.registered"])
    assert run.received(out, "reseller") is None
    rec = run.record(out, "reseller")
    assert rec.outcome == "withheld" and rec.reason == "subject_type_consumer_not_allowed"


def _business_profile(customer: str) -> dict:
    return event(
        "customer.registered",
        {
            "name": {"first": "Grace", "last": "Hopper"},
            "company": "Lensworks Optical LLC",
            "title": "Buyer",
            "emails": ["buyer@lensworks.example"],
            "fein": "12-3456789",
            "resale_numbers": ["NY-RS-1"],
            "payment_preferences": {"method": "net_terms"},
        },
        customer=customer,
        stype="business",
        n=1,
    )


def test_business_reaches_reseller_only_with_marketing_consent(run: Run) -> None:
    out = run.send(_business_profile("B-1"))
    assert run.received(out, "reseller") is None
    assert run.record(out, "reseller").reason == "no_marketing_opt_in"

    run.send(consent({"marketing": "opt_in"}, customer="B-1", stype="business"))
    out = run.send(_business_profile("B-1"))
    got = run.received(out, "reseller")
    assert got is not None
    assert got["data"]["company"] == "Lensworks Optical LLC"
    # Business identifiers and payment terms are not for resellers.
    for field in ("fein", "resale_numbers", "payment_preferences"):
        assert field not in got["data"]
    assert "data.fein" in got["_gateway"]["removed"]
    assert run.record(out, "reseller").consent[0].startswith("marketing:opt_in@")


def test_business_reseller_sharing_refused_or_gpc_withholds(run: Run) -> None:
    run.send(
        consent(
            {"marketing": "opt_in", "reseller_sharing": False}, customer="B-2", stype="business"
        )
    )
    assert run.received(run.send(_business_profile("B-2")), "reseller") is None
    run.send(
        consent(
            {"marketing": "opt_in", "reseller_sharing": True, "gpc": True},
            customer="B-3",
            stype="business",
        )
    )
    assert run.received(run.send(_business_profile("B-3")), "reseller") is None


def test_opted_out_marketing_email_withheld_but_order_confirmation_flows(
    run: Run, sample: dict
) -> None:
    cid = sample["order.placed"]["subject"]["customer_id"]
    run.send(consent({"marketing": "opt_out"}, customer=cid))
    update = event(
        "customer.updated",
        {"name": {"first": "Alice", "last": "Moreno"}, "emails": ["alice@example.com"]},
        customer=cid,
        n=3,
    )
    out = run.send(update)
    assert run.received(out, "email") is None
    assert run.record(out, "email").reason == "marketing_opt_out"
    out = run.send(sample["order.placed"])
    confirmation = run.received(out, "email")
    assert confirmation is not None
    assert confirmation["data"]["contact_email"] == "alice.moreno@example.com"
    assert confirmation["_gateway"]["purposes"] == ["essential.service.notifications.email"]


@pytest.mark.parametrize(
    ("signal", "reason"),
    [
        ({"objection": True}, "objection"),
        ({"gpc": True}, "global_privacy_control"),
    ],
)
def test_objection_and_gpc_block_marketing(run: Run, signal: dict, reason: str) -> None:
    run.send(consent({"marketing": "opt_in", **signal}, customer="C-7"))
    out = run.send(event("customer.updated", {"emails": ["x@example.com"]}, customer="C-7"))
    assert run.record(out, "email").reason == reason


def test_gpc_seen_on_a_site_visit_blocks_later_marketing(run: Run, sample: dict) -> None:
    visit = copy.deepcopy(sample["site.visit"])
    visit["subject"]["customer_id"] = "C-8"
    visit["data"]["gpc"] = True
    run.send(visit)
    out = run.send(event("customer.updated", {"emails": ["x@example.com"]}, customer="C-8"))
    assert run.record(out, "email").reason == "global_privacy_control"


def test_analytics_sees_no_direct_identifier(run: Run, sample: dict) -> None:
    order, visit = sample["order.placed"], sample["site.visit"]
    raw_values = {str(v) for v in walk_values(order) + walk_values(visit)}
    direct = {
        "C-1001",
        "Alice",
        "Moreno",
        "alice.moreno@example.com",
        "+1-217-555-0142",
        "12 Orchard Lane",
        order["data"]["payment"]["card"]["token"],
        "203.0.113.57",
        "SO-50001",
        "sess-a1f3",
        "62704",
        "40.712776",
        "-74.005974",
    }
    assert direct <= raw_values  # the inputs do carry them
    for ev in (order, visit):
        out = run.send(ev)
        # Aggregates only: no message per event, and what the event adds to the windows
        # (dimension values and sums) carries none of them.
        assert run.received(out, "analytics") is None
        (c,) = out.contributions
        added = {str(v) for rows in c.rows.values() for dims, sums in rows for v in dims}
        added |= {str(v) for rows in c.rows.values() for _, sums in rows for v in sums.values()}
        assert added and not direct & added, direct & added
        assert run.record(out, "analytics").outcome == "contributed"


def test_pseudonyms_are_stable_per_agent_and_differ_between_agents(run: Run, sample: dict) -> None:
    order = sample["order.placed"]
    out1 = run.send(order)
    p1 = run.received(out1, "payments")["subject"]["customer_id"]  # type: ignore[index]
    (c1,) = out1.contributions
    again = copy.deepcopy(order)
    again["event_id"] = "evt-another-order-0001"
    out2 = run.send(again)
    assert run.received(out2, "payments")["subject"]["customer_id"] == p1  # type: ignore[index]
    assert p1.startswith("ps_")
    # Analytics' windows count distinct customers by a key of their own (never sent).
    (c2,) = out2.contributions
    assert c1.subject_key == c2.subject_key
    assert c1.subject_key != p1 and c1.event_key != c2.event_key
    assert order["subject"]["customer_id"] not in (c1.subject_key, p1)


def test_most_specific_rule_wins_shipping_gets_items_not_prices(run: Run, sample: dict) -> None:
    got = run.received(run.send(sample["order.placed"]), "shipping")
    assert got is not None
    assert got["data"]["items"][1] == {"sku": "SKU-31052", "quantity": 1, "weight_g": 180}
    assert "unit_price" not in got["data"]["items"][0] and "total" not in got["data"]
    assert {"data.items[].unit_price", "data.total", "data.payment", "data.billing_address"} <= set(
        got["_gateway"]["removed"]
    )


def test_transform_failure_fails_closed(run: Run, sample: dict) -> None:
    order = copy.deepcopy(sample["order.placed"])
    order["data"]["shipping_address"]["postal_code"] = "6"  # too short to cut to a ZIP3
    out = run.send(order)
    rec = run.record(out, "analytics")
    assert "data.shipping_address.postal_code" in rec.paths_removed
    (c,) = out.contributions
    assert c.rows["order_zip3"][0][0] == ("(unknown)",)


def test_withholding_is_recorded_without_a_message(run: Run, sample: dict) -> None:
    out = run.send(sample["customer.registered"])
    assert "reseller" not in {m.agent for m in out.messages}
    rec = run.record(out, "reseller")
    assert rec.outcome == "withheld" and rec.payload_digest is None and rec.key_id is None


def test_erasure_notifies_exactly_past_recipients_then_nothing_flows(
    run: Run, sample: dict
) -> None:
    cid = "C-4242"

    def mine(ev: dict, n: int) -> dict:
        ev = copy.deepcopy(ev)
        ev["subject"]["customer_id"] = cid
        ev["event_id"] = f"evt-erasure-test-{n:04d}"
        return ev

    run.send(mine(sample["site.visit"], 1))  # analytics only: a contribution to aggregates
    run.send(mine(sample["payment.settled"], 2))  # payments only
    out = run.send(event("erasure.requested", {"request_id": "DSR-1"}, customer=cid))
    # Analytics received nothing about the subject (aggregates only): no notice.
    assert {r.agent for r in out.records} == {"payments"}
    assert all(r.outcome == "erasure_notice" for r in out.records)
    notice = run.received(out, "payments")
    assert notice is not None and notice["notice"] == "erasure"
    # Each agent is told the subject as it knows it: payments by its own
    # pseudonym (the key of every message they got about the subject), and what it got,
    # never the raw customer id they never had.
    (payments_message,) = [m for o in run.outcomes[:2] for m in o.messages if m.agent == "payments"]
    assert notice["subjects"] == [payments_message.key.decode()]
    assert [d["disclosure_id"] for d in notice["disclosures"]] == [payments_message.disclosure_id]
    assert cid not in orjson.dumps(notice).decode()
    later = run.send(mine(sample["order.placed"], 3))
    assert later.messages == []
    assert {r.reason for r in later.records} == {"subject_erased"}
    # Consent state kept only the fact of erasure.
    assert run.states[cid].erased and run.states[cid].marketing == "unknown"


def personal_values(ev: dict) -> set[str]:
    """String values of the event's leaves whose category is personal (user.*)."""
    cats = field_categories(ev["event_type"])
    out: set[str] = set()

    def walk(obj: object, path: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(obj, list):
            for x in obj:
                walk(x, path + "[]")
        elif isinstance(obj, str) and cats.get(path, "").startswith("user.") and len(obj) > 5:
            out.add(obj)

    walk(ev, "")
    return out


def test_records_hold_no_raw_personal_data(run: Run) -> None:
    from gateway.dev.samples import scenario

    checked = 0
    for ev in scenario():
        pii = personal_values(ev)
        for rec in run.send(ev).records:
            text = rec.to_json().decode()
            assert not {v for v in pii if v in text}, (rec.agent, rec.event_type)
            checked += 1
    assert checked > 40


def test_reprocessing_an_event_gives_the_same_disclosure_ids(run: Run, sample: dict) -> None:
    first = run.send(sample["order.placed"])
    second = run.send(sample["order.placed"])
    assert [r.record_id for r in first.records] == [r.record_id for r in second.records]
    assert [m.key for m in first.messages] == [m.key for m in second.messages]
