"""``Pipeline.process``, the contract the stream worker, the replay and the audit share: it
never raises, and an event takes full effect or none. A bug while processing one event
dead-letters that event (reason ``internal_error``, the exception type only) and leaves
the consent states as they were, so the event, sent again once fixed, has its whole
effect."""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import Any

import orjson
import pytest

from gateway import pipeline as pipeline_module
from gateway.consent import ConsentState
from gateway.runtime import Core
from tests.conftest import Run, event

SECRET = "Zelda-Quintana-4242"  # stands for personal data an exception message might quote


def mine(ev: dict[str, Any], customer: str, n: int) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    ev["subject"]["customer_id"] = customer
    # Event ids reach agents and logs: never built from personal data.
    ev["event_id"] = f"evt-pipeline-{n:04d}-{hashlib.sha256(customer.encode()).hexdigest()[:8]}"
    return ev


def fail_on_call(real: Any, n: int) -> Any:
    """``real``, except that its ``n``-th call raises an exception quoting personal data."""
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise RuntimeError(f"cannot handle {SECRET}")
        return real(*args, **kwargs)

    return wrapper


def assert_internal_error(out: Any, event_id: str | None) -> None:
    assert out.dead_letter is not None
    assert out.dead_letter.reason == "internal_error"
    assert out.dead_letter.error == "internal error: RuntimeError"
    if event_id is not None:
        assert out.dead_letter.event_id == event_id
    assert (out.event, out.records, out.messages) == (None, [], [])
    assert SECRET.encode() not in out.dead_letter.to_json()


def test_a_crash_while_deciding_is_dead_lettered_and_logged_without_event_data(
    core: Core, run: Run, sample: dict, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    ev = mine(sample["order.placed"], "C-crash-1", 1)
    assert len(core.engine.subscribers["order.placed"]) > 2
    monkeypatch.setattr(core.engine, "decide", fail_on_call(core.engine.decide, 2))
    with caplog.at_level(logging.ERROR, logger="gateway.pipeline"):
        out = run.send(ev)  # does not raise
    assert_internal_error(out, ev["event_id"])
    (logged,) = [r for r in caplog.records if r.name == "gateway.pipeline"]
    # The traceback's frames, for whoever fixes the bug, but not the exception's message,
    # which quotes event data: check what a log handler would really write.
    written = logging.Formatter().format(logged)
    assert "RuntimeError" in written and "Traceback" not in written
    assert "in wrapper" in written  # the frame that raised
    assert ev["event_id"] in written
    assert "C-crash-1" not in written and SECRET not in written
    # The first agent was decided, but the event had no effect: not even the subject type.
    assert run.states == {}


def test_a_crash_while_parsing_is_dead_lettered_too(
    run: Run, sample: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        pipeline_module, "parse_event", fail_on_call(pipeline_module.parse_event, 1)
    )
    out = run.send(sample["order.placed"])
    assert_internal_error(out, None)
    assert out.dead_letter is not None and out.dead_letter.event_id.startswith("raw-")


def test_a_crash_after_a_disclosure_leaves_the_consent_state_as_it_was(
    core: Core, run: Run, sample: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "C-crash-2"
    registered = mine(sample["customer.registered"], cid, 1)
    assert len(core.engine.subscribers["customer.registered"]) >= 2
    # The second agent's message is never built: the first one's was already sealed.
    monkeypatch.setattr(core.pipeline, "_emit", fail_on_call(core.pipeline._emit, 2))
    assert_internal_error(run.send(registered), registered["event_id"])
    assert run.states == {}  # the registration did not even set the subject's type
    monkeypatch.undo()
    # Sent again once fixed, the event has its whole effect.
    out = run.send(registered)
    assert out.dead_letter is None
    assert {r.agent for r in out.records} == set(core.engine.subscribers["customer.registered"])
    assert run.states[cid].subject_type == registered["subject"]["type"]


def test_a_crash_in_an_erasure_request_leaves_the_subject_to_be_erased_again(
    core: Core, run: Run, sample: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    cid = "C-crash-3"
    run.send(mine(sample["site.visit"], cid, 1))
    run.send(mine(sample["payment.settled"], cid, 2))
    erasure = event("erasure.requested", {"request_id": "DSR-9"}, customer=cid, n=3)
    monkeypatch.setattr(
        core.pipeline, "erasure_request", fail_on_call(core.pipeline.erasure_request, 1)
    )
    assert_internal_error(run.send(erasure), erasure["event_id"])
    # Not marked erased: had it been, the request sent again would notify nobody.
    assert cid not in run.states or not run.states[cid].erased
    monkeypatch.undo()
    out = run.send(erasure)
    assert out.erasure_request is not None
    # (The visit only contributed to analytics' aggregates: analytics holds nothing
    # about the subject and gets no notice.)
    assert {(r.agent, r.outcome) for r in out.records} == {("payments", "erasure_notice")}
    assert run.states[cid].erased


def test_a_crash_reading_the_consent_state_is_dead_lettered(core: Core, sample: dict) -> None:
    class Unreadable(dict[str, ConsentState]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError(f"state store down for {SECRET}")

    out = core.pipeline.process(orjson.dumps(sample["order.placed"]), Unreadable(), verify=False)
    assert_internal_error(out, sample["order.placed"]["event_id"])


def test_every_record_id_covers_what_its_record_decided(core: Core) -> None:
    # The pipeline remembers the digests of the decisions it has seen (a few shapes recur):
    # each record's id must still be the one its own outcome, paths, purposes and bases
    # give, over a stream of every event type, subject state and agent.
    from gateway.dev.samples import random_events
    from gateway.records import decision_digest

    states: dict[str, ConsentState] = {}
    checked = 0
    for ev in random_events(600, seed=7, customers=40):
        out = core.pipeline.process(orjson.dumps(ev), states, verify=False)
        for rec in out.records:
            digest = decision_digest(
                rec.outcome,
                rec.reason,
                rec.paths_sent,
                rec.paths_transformed,
                rec.paths_removed,
                rec.purposes,
                rec.legal_bases,
                rec.policy_version,
            )
            assert rec.event_fp is not None
            assert rec.record_id == core.pipeline.ids.record_id(
                rec.event_fp, rec.agent, "event", digest
            )
            checked += 1
    assert checked > 500
