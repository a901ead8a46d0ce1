"""A simulated deployment for the audit tests.

It writes exactly what the stream worker writes (records, then sealed messages, then dead
letters, with the same keys), with topics as lists and the ledger as a dict, so each fault
the reconciliation must find can be injected precisely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from gateway.audit import ReconcileReport, TopicMessage, reconcile
from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.pipeline import EventResult
from gateway.runtime import Core

IN, DISC, DEAD = "in.events", "in.disclosures", "in.dead"
PARTITIONS = 3


def part(key: bytes) -> int:
    return int(hashlib.sha256(key).hexdigest(), 16) % PARTITIONS


@dataclass
class Sim:
    """A simulated deployment: topics as lists, the ledger as a dict (first copy wins)."""

    core: Core
    inputs: list[TopicMessage] = field(default_factory=list)
    disclosures: list[TopicMessage] = field(default_factory=list)
    dead: list[TopicMessage] = field(default_factory=list)
    agents: dict[str, list[TopicMessage]] = field(default_factory=dict)
    ledger: dict[str, str | None] = field(default_factory=dict)
    states: dict[int, dict[str, ConsentState]] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] | None = None

    @property
    def topics(self) -> dict[str, str]:
        return {n: a.topic for n, a in self.core.policy.agents.items()}

    def _put(
        self, lst: list[TopicMessage], topic: str, key: bytes | None, value: bytes
    ) -> TopicMessage:
        p = part(key or b"")
        m = TopicMessage(topic, p, sum(1 for x in lst if x.partition == p), key, value)
        lst.append(m)
        return m

    def publish(self, raw: bytes, key: bytes = b"C-1") -> TopicMessage:
        return self._put(self.inputs, IN, key, raw)

    def process(
        self,
        m: TopicMessage,
        *,
        records: bool = True,
        messages: bool = True,
        ledger: bool = True,
        dead: bool = True,
        unsafe: bool = False,
    ) -> EventResult:
        """What the worker does for one input; flags leave a phase out (a crash)."""
        out = self.core.pipeline.process(m.value, self.states.setdefault(m.partition, {}))

        def log() -> None:
            if not records:
                return
            for r in out.records:
                self._put(self.disclosures, DISC, r.subject_ref.encode(), r.to_json())
                if ledger:
                    self.ledger.setdefault(r.record_id, r.to_json().decode())

        def release() -> None:
            if not messages:
                return
            for msg in out.messages:
                self._put(self.agents.setdefault(msg.agent, []), msg.topic, msg.key, msg.value)

        first, second = (release, log) if unsafe else (log, release)
        first()
        second()
        if out.dead_letter is not None and dead:
            self._put(self.dead, DEAD, out.dead_letter.event_id.encode(), out.dead_letter.to_json())
        return out

    def run(self, raws: list[bytes], keys: list[bytes] | None = None) -> list[TopicMessage]:
        ms = [self.publish(raw, (keys or [b"C-1"] * len(raws))[i]) for i, raw in enumerate(raws)]
        for m in ms:
            self.process(m)
        return ms

    def report(self, pipeline_core: Core | None = None) -> ReconcileReport:
        for name in self.topics:
            self.agents.setdefault(name, [])
        return reconcile(
            (pipeline_core or self.core).pipeline,
            self.inputs,
            disclosures=self.disclosures,
            ledger=self.ledger,
            agent_messages=self.agents,
            dead_letters=self.dead,
            agent_topics=self.topics,
            offsets=self.offsets,
        )


def keyed(events: list[dict]) -> tuple[list[bytes], list[bytes]]:
    return (
        [orjson.dumps(e) for e in events],
        [e["subject"]["customer_id"].encode() for e in events],
    )


SCENARIO = keyed(scenario())


def first_message(sim: Sim, agent: str = "shipping") -> TopicMessage:
    return sim.agents[agent][0]
