"""Local validation for publishers: problems named in the publisher's own words, validity
exactly the gateway's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.dev.samples import scenario
from gateway.errors import EventError, EventNotJSON, SchemaViolation, UnknownEventType
from gateway.events import parse_event, safe_field_name
from gateway.sdk.validation import explain, validate_event


@pytest.fixture
def events() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in scenario():
        out.setdefault(e["event_type"], e)
    return copy.deepcopy(out)


def test_a_valid_event_has_no_problems(events: dict[str, dict[str, Any]]) -> None:
    for e in scenario():
        assert explain(e) == []
        assert validate_event(e).event_id == e["event_id"]


def test_unknown_fields_are_named_in_full_with_the_schema_rule(
    events: dict[str, dict[str, Any]],
) -> None:
    e = events["customer.registered"]
    e["data"]["nickname"] = "Bibi"
    e["data"]["name"]["frist"] = "Zoe"
    problems = explain(e)
    assert len(problems) == 2
    nick = next(p for p in problems if p.startswith("data.nickname: "))
    assert "unknown field" in nick and "'nickname'" in nick
    assert "unknown fields are never forwarded" in nick
    assert "emails" in nick  # the fields the schema does know there
    first = next(p for p in problems if p.startswith("data.name.frist: "))
    assert "did you mean 'first'?" in first
    # The gateway's own (dead-letter) message hides the names; the publisher's does not.
    joined = " ".join(problems)
    assert safe_field_name("nickname") not in joined and "#" not in joined
    assert "Bibi" not in joined and "Zoe" not in joined  # never a value


def test_types_and_rules_name_the_path_and_the_rule(events: dict[str, dict[str, Any]]) -> None:
    e = events["order.placed"]
    e["data"]["items"][0]["quantity"] = "many"
    e["subject"]["type"] = "person"
    del e["event_id"]
    problems = explain(e)
    assert "event_id: missing: order.placed requires this field" in problems
    assert any(
        p.startswith("data.items[0].quantity: Input should be a valid integer")
        and p.endswith("(got a string)")
        for p in problems
    )
    assert any(
        p.startswith("subject.type: Input should be 'consumer' or 'business'") for p in problems
    )
    assert not any("many" in p or "person" in p for p in problems)


def test_event_types_and_json_errors_in_full(events: dict[str, dict[str, Any]]) -> None:
    e = events["order.placed"]
    e["event_type"] = "order.placd"
    (problem,) = explain(e)
    assert problem.startswith("event_type: 'order.placd' is not a known event type")
    assert "did you mean 'order.placed'?" in problem
    del e["event_type"]
    assert explain(e)[0].startswith("event_type: missing; one of: consent.changed")
    assert explain(b'{"event_id": 1,') == [
        "not valid JSON (UTF-8): unexpected end of data: line 1 column 16 (char 15)"
    ]
    assert explain(b"[1]") == ["an event must be a JSON object, got an array"]
    assert explain(orjson.dumps(events["site.visit"]), max_bytes=100)[0].startswith("event is ")


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        (lambda e: e["data"].update(shoe_size=44), SchemaViolation),
        (lambda e: e.update(event_type="nope.nope"), UnknownEventType),
    ],
)
def test_validate_event_raises_the_gateways_error_class_with_the_full_message(
    events: dict[str, dict[str, Any]], mutate: Any, error: type[EventError]
) -> None:
    e = events["order.placed"]
    mutate(e)
    with pytest.raises(error) as got:
        validate_event(e)
    with pytest.raises(error) as gateway:
        parse_event(orjson.dumps(e))
    assert got.value.reason == gateway.value.reason
    assert str(got.value) == "; ".join(explain(e))
    with pytest.raises(EventNotJSON):
        validate_event(b"{")


def test_validity_is_exactly_the_gateways_on_mutated_events(
    events: dict[str, dict[str, Any]],
) -> None:
    # Every way to break an event the fuzz corpus of one event offers: drop, retype, add.
    base = events["order.placed"]
    variants: list[Any] = []
    for key in list(base["data"]):
        for value in (None, 1, "x", [], {}):
            e = copy.deepcopy(base)
            e["data"][key] = value
            variants.append(e)
        e = copy.deepcopy(base)
        del e["data"][key]
        variants.append(e)
    for e in variants:
        raw = orjson.dumps(e)
        try:
            parse_event(raw)
            accepted = True
        except EventError:
            accepted = False
        assert (explain(raw) == []) == accepted


def test_publish_dry_run_lists_every_problem_and_sends_nothing(
    events: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    bad = events["customer.registered"]
    bad["data"]["nickname"] = "Bibi"
    bad["data"]["emials"] = []
    typo = copy.deepcopy(events["order.placed"])
    typo["event_type"] = "order.placd"
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps(events["order.placed"]), orjson.dumps(bad), b"", orjson.dumps(typo)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    # No broker configured: a dry run needs none.
    r = CliRunner(env={"GATEWAY_BOOTSTRAP_SERVERS": "", "COLUMNS": "200"}).invoke(
        main, ["publish", "--dry-run", str(path)]
    )
    assert r.exit_code == 1, r.output
    out = r.output
    assert "line 2: 2 problem(s)" in out
    assert "data.nickname: unknown field" in out and "data.emials: unknown field" in out
    assert "did you mean 'emails'?" in out
    assert "line 4: 1 problem(s)" in out and "'order.placd'" in out
    assert "line 1" not in out
    assert "1 valid, 2 invalid; nothing sent (--dry-run)" in out
    path.write_bytes(orjson.dumps(events["order.placed"]) + b"\n")
    r = CliRunner().invoke(main, ["publish", "--dry-run", str(path)])
    assert r.exit_code == 0 and "1 valid, 0 invalid" in r.output
