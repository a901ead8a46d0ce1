"""Event schemas: every field is labelled, unknown fields are rejected, errors leak nothing."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import BaseModel

from gateway.dev.samples import random_events, scenario, to_jsonl
from gateway.errors import (
    EventNotJSON,
    EventTooLarge,
    SchemaViolation,
    TaxonomyError,
    UnknownEventType,
)
from gateway.events import parse_event, safe_field_name
from gateway.taxonomy import default_taxonomy, load_taxonomy
from schemas.base import Strict, cat
from schemas.registry import (
    UnlabelledField,
    _walk,
    event_types,
    export_json_schemas,
    field_categories,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("etype", event_types())
def test_every_field_of_every_event_has_a_known_category(etype: str) -> None:
    tax = default_taxonomy()
    cats = field_categories(etype)
    assert cats
    for path, category in cats.items():
        assert tax.is_category(category), f"{etype}: {path} has unknown category {category}"


def test_an_unlabelled_field_is_a_build_error() -> None:
    class Bad(Strict):
        ok: str = cat("user.name")
        oops: str

    with pytest.raises(UnlabelledField, match="oops"):
        _walk(Bad, "", None)

    class Nested(BaseModel):
        inner: Bad

    with pytest.raises(UnlabelledField):
        _walk(Nested, "", None)


def test_policy_collects_what_the_privacy_policy_lists() -> None:
    every = {c for t in event_types() for c in field_categories(t).values()}
    for needed in (
        "user.name",
        "user.job_title",
        "user.contact.organization",
        "user.contact.address",
        "user.contact.phone_number",
        "user.contact.fax_number",
        "user.contact.email",
        "user.government_id.employer_identification_number",
        "user.government_id.resale_number",
        "user.financial.trade_reference",
        "user.financial.payment_preference",
        "user.financial.bank_account",
        "user.financial.credit_card",
        "user.health_and_medical.vision_prescription",
        "user.health_and_medical.patient_details",
        "user.content.private",
        "user.behavior.browsing_history",
        "user.behavior.search_history",
        "user.device.ip_address",
        "user.device.user_agent",
        "user.behavior.telephony_log",
        "user.location.precise",
        "user.privacy_preferences",
    ):
        assert any(c == needed or c.startswith(needed + ".") for c in every), needed


def test_bundled_sample_file_is_the_scenario_and_valid() -> None:
    bundled = (ROOT / "gateway" / "data" / "sample_events.jsonl").read_bytes()
    assert bundled == to_jsonl(scenario()), "regenerate: python -c 'from gateway.dev.samples ...'"
    types = set()
    for line in bundled.splitlines():
        types.add(parse_event(line).event_type)
    assert types == set(event_types())
    for e in random_events(500):
        parse_event(orjson.dumps(e))


def _order() -> dict:
    return next(e for e in scenario() if e["event_type"] == "order.placed")


def test_unknown_field_is_rejected_and_named_without_its_value() -> None:
    ev = _order()
    ev["data"]["loyalty_card_secret"] = "alice-secret-value"
    with pytest.raises(SchemaViolation) as e:
        parse_event(orjson.dumps(ev))
    # Named by a digest: a field name may itself be personal (someone's name as a key).
    assert f"data.{safe_field_name('loyalty_card_secret')}: unknown field" in str(e.value)
    assert "loyalty_card_secret" not in str(e.value)
    assert "alice-secret-value" not in str(e.value)


def test_wrong_type_error_names_path_not_value() -> None:
    ev = _order()
    ev["data"]["payment"]["card"]["last4"] = "4111x"
    ev["data"]["items"][0]["quantity"] = "many"
    with pytest.raises(SchemaViolation) as e:
        parse_event(orjson.dumps(ev))
    msg = str(e.value)
    assert "data.payment.card.last4" in msg and "data.items[0].quantity" in msg
    assert "4111" not in msg and "many" not in msg
    assert e.value.reason == "schema"


def test_bad_inputs_each_have_a_specific_error() -> None:
    with pytest.raises(EventNotJSON):
        parse_event(b"{not json")
    with pytest.raises(EventNotJSON, match="JSON object"):
        parse_event(b"[1, 2]")
    with pytest.raises(EventNotJSON):
        parse_event(b"\xff\xfe{}")
    with pytest.raises(UnknownEventType, match="unknown event type <type #"):
        parse_event(orjson.dumps({**_order(), "event_type": "order.cancelled"}))
    with pytest.raises(UnknownEventType, match="missing"):
        parse_event(b"{}")
    with pytest.raises(EventTooLarge, match="limit is 2048"):
        parse_event(b" " * 3000, max_bytes=2048)


def test_json_schema_export(tmp_path: Path) -> None:
    files = export_json_schemas(tmp_path)
    assert len(files) == len(event_types())
    schema = json.loads((tmp_path / "order.placed.v1.schema.json").read_text())
    assert schema["additionalProperties"] is False
    props = schema["properties"]
    assert props["subject"]
    assert "x-data-category" in json.dumps(schema)


def test_taxonomy_extension_errors(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("data_categories:\n  - {key: user.foo.bar, parent: user.foo}\n")
    with pytest.raises(TaxonomyError, match="unknown parent"):
        load_taxonomy(bad)
    bad.write_text("data_categories:\n  - {key: user.name, parent: user}\n")
    with pytest.raises(TaxonomyError, match="declared twice"):
        load_taxonomy(bad)
    tax = default_taxonomy()
    assert tax.is_sensitive("user.health_and_medical.vision_prescription")
    assert not tax.is_sensitive("user.contact.email")
    assert tax.is_marketing("marketing.communications.email")
    assert tax.is_marketing("third_party_sharing.marketing")
    assert not tax.is_marketing("essential.service.notifications.email")


def test_data_times_are_bounded_and_utc() -> None:
    ev = next(e for e in scenario() if e["event_type"] == "order.shipped")
    ev["data"]["shipped_at"] = "2026-03-04T11:00:00+02:00"
    assert parse_event(orjson.dumps(ev)).body["data"]["shipped_at"] == "2026-03-04T09:00:00Z"
    ev["data"]["shipped_at"] = "2026-03-04T11:00:00"  # naive: UTC
    assert parse_event(orjson.dumps(ev)).body["data"]["shipped_at"] == "2026-03-04T11:00:00Z"
    for bad in ("1969-12-31T23:59:59Z", "2100-01-01T00:00:00Z", "9999-01-01T00:00:00Z"):
        ev["data"]["shipped_at"] = bad
        with pytest.raises(
            SchemaViolation, match=r"data\.shipped_at: Value error, time out of range: it must be"
        ):
            parse_event(orjson.dumps(ev))
    profile = next(e for e in scenario() if e["event_type"] == "customer.registered")
    for bad in ("1899-12-31", "2100-01-01"):
        profile["data"]["date_of_birth"] = bad
        with pytest.raises(SchemaViolation, match=r"data\.date_of_birth: Value error"):
            parse_event(orjson.dumps(profile))
    ticket = {
        "event_id": "evt-ticket-0001",
        "event_type": "support.ticket",
        "schema_version": 1,
        "occurred_at": "2026-03-04T11:00:00Z",
        "subject": {"customer_id": "C-1", "type": "consumer"},
        "data": {
            "ticket_id": "T-1",
            "channel": "phone",
            "subject_line": "Call",
            "message": "Called about an order",
            "call": {
                "calling_number": "+1-217-555-0142",
                "call_type": "inbound",
                "started_at": "2026-03-04T10:58:00-05:00",
                "duration_s": 60,
            },
        },
    }
    body = parse_event(orjson.dumps(ticket)).body
    assert body["data"]["call"]["started_at"] == "2026-03-04T15:58:00Z"
    ticket["data"]["call"]["started_at"] = "yesterday"
    with pytest.raises(SchemaViolation, match=r"data\.call\.started_at"):
        parse_event(orjson.dumps(ticket))
