"""Erasure notices an agent can act on: "You may request deletion of your personal
information" reaches every agent that received it, and each notice names what that agent
itself received (its disclosure ids, its own references and its own pseudonym of the
subject), taken from the log, so that an agent keeping what it received deletes exactly
that subject's data and nothing else."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.erasure import NOTICE_INSTRUCTION, ErasureRequest, erasure_notices
from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.sdk.reader import AgentReader, Received
from gateway.sdk.store import AgentStore
from tests.conftest import Run, event


def mine(ev: dict[str, Any], customer: str, n: int) -> dict[str, Any]:
    ev = copy.deepcopy(ev)
    ev["subject"]["customer_id"] = customer
    ev["event_id"] = f"evt-erase-{customer}-{n:03d}"
    return ev


def test_an_agent_deletes_exactly_the_erased_subjects_data(
    run: Run, sample: dict, readers: dict[str, AgentReader]
) -> None:
    erased, kept = "C-erase-1", "C-erase-2"
    for cid in (erased, kept):
        run.send(mine(sample["customer.registered"], cid, 1))
        run.send(mine(sample["order.placed"], cid, 2))
        run.send(mine(sample["order.shipped"], cid, 3))
        run.send(mine(sample["site.visit"], cid, 4))
    out = run.send(event("erasure.requested", {"request_id": "DSR-77"}, customer=erased))
    assert out.erasure_request is not None

    stores: dict[str, AgentStore] = {}
    before: dict[str, dict[str, set[str]]] = {}
    # Analytics receives aggregates only: nothing about the subject to delete, no notice.
    for agent in ("shipping", "email", "payments"):
        store = stores[agent] = AgentStore()
        reader = readers[agent]
        for o in run.outcomes[:-1]:  # everything before the erasure, as the agent got it
            for m in o.messages:
                if m.agent == agent:
                    got = reader.read(m.value)
                    assert isinstance(got, Received)
                    store.add(got)
        assert len(store.subjects()) == 2  # one pseudonym per subject, per agent
        before[agent] = {s: {r.disclosure_id for r in store.about(s)} for s in store.subjects()}

    notified = {m.agent for m in out.messages}
    assert notified == {"shipping", "email", "payments"}
    for m in out.messages:
        store = stores[m.agent]
        notice = readers[m.agent].read(m.value)
        assert isinstance(notice, Received) and notice.kind == "erasure_notice"
        assert notice.payload["instruction"] == NOTICE_INSTRUCTION
        # The notice names the subject as this agent knows it, and what it got.
        (subject,) = notice.payload["subjects"]
        assert subject == m.key.decode()
        listed = {d["disclosure_id"] for d in notice.payload["disclosures"]}
        assert listed == before[m.agent][subject]
        other = next(s for s in before[m.agent] if s != subject)
        result = store.apply_erasure(notice)
        assert set(result.deleted) == before[m.agent][subject] and result.unknown == []
        # Exactly that subject's data is gone, the other subject's all kept.
        assert store.subjects() == [other]
        assert {r.disclosure_id for r in store} == before[m.agent][other]
        # Each listed reference is the one the agent received with that disclosure.
        refs = {d["disclosure_id"]: d["ref"] for d in notice.payload["disclosures"]}
        for o in run.outcomes:
            for msg in o.messages:
                if msg.agent == m.agent and msg.disclosure_id in refs:
                    opened = readers[m.agent].opener.open(msg.value)
                    assert opened.ref == refs[msg.disclosure_id]
        assert erased not in orjson.dumps(notice.payload).decode()


def test_a_store_applies_a_notice_when_it_arrives_in_its_stream(
    run: Run, sample: dict, readers: dict[str, AgentReader]
) -> None:
    cid = "C-erase-3"
    run.send(mine(sample["payment.settled"], cid, 1))
    run.send(event("erasure.requested", {"request_id": "DSR-78"}, customer=cid))
    store = AgentStore()
    for o in run.outcomes:
        for m in o.messages:
            if m.agent == "payments":
                got = readers["payments"].read(m.value)
                assert got is not None
                store.add(got)
    assert len(store) == 0 and len(store.notices) == 1
    with pytest.raises(ValueError):
        store.apply_erasure({"notice": "something else"})


def record(**kw: Any) -> DecisionRecord:
    base: dict[str, Any] = {
        "record_id": "r",
        "decision_id": "d",
        "event_id": "e",
        "event_type": "order.placed",
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "subject_ref": "subj_a",
        "subject_type": "consumer",
        "agent": "shipping",
        "recipient": {
            "name": "shipping",
            "legal_name": "x",
            "address": "y",
            "role": "service_provider",
        },
        "outcome": "disclosed",
        "policy_version": "pv",
    }
    return DecisionRecord.model_validate({**base, **kw})


def test_notices_come_from_the_subjects_disclosures_in_the_log() -> None:
    request = ErasureRequest(
        event_id="evt-erase",
        event_fp="fp-erase",
        requested_at="2026-02-01T00:00:00Z",
        subject_type="consumer",
        subject_refs=["subj_a", "subj_a_old"],
        agent_subjects={"shipping": ["s-new", "s-old"], "email": ["e-new"]},
        policy_version="pv",
    )
    records = [
        record(record_id="r1", event_fp="fp1"),
        record(record_id="r1", event_fp="fp1"),  # the same record twice (a redelivery)
        record(record_id="r2", subject_ref="subj_a_old", event_fp="fp2"),  # an older period
        record(record_id="r3", outcome="withheld", event_fp="fp3"),  # nothing was sent
        record(record_id="r4", subject_ref="subj_b", event_fp="fp4"),  # someone else
        record(record_id="r5", agent="email"),  # a record from before fingerprints
        record(record_id="r6", agent="reseller", event_fp="fp6"),  # not asked for
    ]
    got = erasure_notices(
        request, records, lambda agent, fp: f"{agent}:{fp}", agents=["shipping", "email"]
    )
    assert [agent for agent, _ in got] == ["email", "shipping"]
    email, shipping = got[0][1], got[1][1]
    assert shipping["subjects"] == ["s-new", "s-old"]
    assert shipping["disclosures"] == [
        {"disclosure_id": "r1", "ref": "shipping:fp1"},
        {"disclosure_id": "r2", "ref": "shipping:fp2"},
    ]
    assert shipping["ref"] == "shipping:fp-erase"
    assert email["disclosures"] == [{"disclosure_id": "r5"}]
    assert "evt-erase" not in orjson.dumps([p for _, p in got]).decode()
    assert ErasureRequest.from_json(request.to_json()) == request


def test_the_first_erasure_yields_a_request_and_the_replay_builds_notices(
    core: Core, sample: dict
) -> None:
    states: dict[str, Any] = {}
    cid = "C-erase-4"
    visit = core.pipeline.process(
        orjson.dumps(mine(sample["site.visit"], cid, 1)), states, verify=False
    )
    shipped = core.pipeline.process(
        orjson.dumps(mine(sample["order.shipped"], cid, 2)), states, verify=False
    )
    out = core.pipeline.process(
        orjson.dumps(event("erasure.requested", {"request_id": "DSR-79"}, customer=cid)),
        states,
        verify=False,
    )
    request = out.erasure_request
    assert request is not None and (out.records, out.messages) == ([], [])
    assert request.subject_refs == [core.pipeline.subject_ref(cid)]
    assert request.agent_subjects["shipping"] == [
        core.pipeline.message_key("shipping", cid).decode()
    ]
    assert cid not in request.to_json().decode()
    notices = core.pipeline.erasure_outputs(request, visit.records + shipped.records)
    # The visit only contributed to analytics' aggregates: no notice for analytics.
    assert [r.outcome for r in visit.records] == ["contributed"]
    assert sorted((r.agent, r.outcome) for r in notices.records) == [
        ("email", "erasure_notice"),
        ("shipping", "erasure_notice"),
    ]
    (m,) = [m for m in notices.messages if m.agent == "shipping"]
    assert m.key == core.pipeline.message_key("shipping", cid)
    # The notice record is what a notice record was: payload digest, topic, key id.
    (rec,) = [r for r in notices.records if r.agent == "shipping"]
    assert rec.payload_digest and rec.topic == "agent.shipping" and rec.record_id == m.disclosure_id
