"""The ledger sink's erasure notices, without a broker: the log in a real SQLite store, the
sends recorded in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.erasure import ErasureRequest
from gateway.ledger import open_store
from gateway.ledger.query import iter_records
from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.sdk.reader import AgentReader
from gateway.stream.notices import ErasureNotifier, Item


def test_notices_go_to_each_agent_that_received_the_subject_records_first(
    core: Core, readers: dict[str, AgentReader], tmp_path: Path
) -> None:
    states: dict[str, ConsentState] = {}
    logged: list[DecisionRecord] = []
    request: ErasureRequest | None = None
    for e in scenario():
        out = core.pipeline.process(orjson.dumps(e), states, verify=False)
        logged += out.records
        if out.erasure_request is not None:
            request = out.erasure_request
            break
    assert request is not None, "the scenario erases a customer"
    sent: list[tuple[str, list[Any]]] = []

    async def send(items: Sequence[Item], what: str) -> None:
        sent.append((what, list(items)))

    with open_store(f"sqlite:///{tmp_path / 'ledger.db'}", signer=core.signing_key) as store:
        store.append(logged)

        async def log_records(records: Sequence[DecisionRecord], shard: int) -> None:
            sent.append(("records", list(records)))
            store.append(list(records), shard)

        notifier = ErasureNotifier(core.pipeline, store, send, log_records)
        n = asyncio.run(notifier.notify(request, 0))
        in_log = {r.record_id for r in iter_records(store)}
    # Exactly the agents that were disclosed something about the subject.
    refs = set(request.subject_refs)
    told = {r.agent for r in logged if r.subject_ref in refs and r.outcome == "disclosed"}
    assert told and n == len(told)
    (what1, records), (what2, notices) = sent  # the records are in the log first
    assert what1 == "records" and what2 == "erasure notices"
    assert {r.agent for r in records} == told
    assert {r.outcome for r in records} == {"erasure_notice"}
    assert {r.record_id for r in records} <= in_log
    # Each notice opens for its agent and lists that agent's disclosures of the subject.
    for topic, _, value, _ in notices:
        agent = next(a for a, spec in core.policy.agents.items() if spec.topic == topic)
        got = readers[agent].read(value)
        assert got is not None and got.payload["notice"] == "erasure"
        ids = {d["disclosure_id"] for d in got.payload["disclosures"]}
        assert ids == {
            r.record_id
            for r in logged
            if r.agent == agent and r.subject_ref in refs and r.outcome == "disclosed"
        }
