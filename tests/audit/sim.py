"""A simulated deployment for the audit tests.

It writes exactly what the stream worker writes (records with their MAC, erasure
requests, then sealed messages, then dead letters, with the same keys), with topics as
lists and the ledger as a dict, so each fault the reconciliation must find can be injected
precisely. Inputs are signed as their demo publisher signs them and decided on their
customer's subject partition (one state table and duplicate cache per subject partition),
in the order the test calls :meth:`Sim.process`: the arrival order there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import orjson

from gateway.audit import ReconcileReport, TopicMessage, reconcile
from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.integrity import HEADER_MAC, WorkerMac
from gateway.pipeline import DeadLetter, DuplicateCache, EventResult
from gateway.routing import subject_partition
from gateway.runtime import Core, demo_signers

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
    seen: dict[int, DuplicateCache] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] | None = None
    now_ms: int | None = None

    @property
    def topics(self) -> dict[str, str]:
        return {n: a.topic for n, a in self.core.policy.agents.items()}

    @property
    def mac(self) -> WorkerMac:
        return WorkerMac(self.core.worker_key)

    def _put(
        self,
        lst: list[TopicMessage],
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...] | None = None,
        partition: int | None = None,
        timestamp_ms: int = -1,
    ) -> TopicMessage:
        p = part(key or b"") if partition is None else partition
        offset = sum(1 for x in lst if x.partition == p)
        m = TopicMessage(topic, p, offset, key, value, headers, timestamp_ms)
        lst.append(m)
        return m

    def publish(
        self,
        raw: bytes,
        key: bytes = b"C-1",
        *,
        partition: int | None = None,
        signed: bool = True,
        timestamp_ms: int = -1,
    ) -> TopicMessage:
        """Publish ``raw`` signed by the demo publisher of its type (to ``partition``, else
        the one its key hashes to: not the gateway's partitioner)."""
        headers: tuple[tuple[str, bytes], ...] = ()
        if signed:
            try:
                etype = orjson.loads(raw)["event_type"]
                signer = demo_signers(self.core.settings, self.core.policy)[etype]
                headers = tuple(signer.headers(raw))
            except Exception:
                headers = ()  # not an event: goes out unsigned, as any raw producer's
        return self._put(self.inputs, IN, key, raw, headers, partition, timestamp_ms)

    def log_record(self, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> None:
        """A record (or erasure request) on the disclosure topic with the workers' MAC."""
        self._put(
            self.disclosures, DISC, key, value, (*headers, (HEADER_MAC, self.mac.record(value)))
        )

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
        """What the worker does for one input, decided on its customer's subject partition
        (arriving there now); flags leave a phase out (a crash)."""
        pipeline = self.core.pipeline
        got = pipeline.admit(m.value, m.headers)
        if isinstance(got, DeadLetter):
            out = EventResult(dead_letter=got)
        else:
            p = subject_partition(got.event.customer_id, PARTITIONS)
            out = pipeline.decide(
                got,
                self.states.setdefault(p, {}),
                seen=self.seen.setdefault(p, DuplicateCache()),
            )

        def log() -> None:
            if not records:
                return
            for r in out.records:
                value = r.to_json()
                self.log_record(
                    value, r.subject_ref.encode(), [("record_id", r.record_id.encode())]
                )
                if ledger:
                    self.ledger.setdefault(r.record_id, value.decode())
            if out.erasure_request is not None:
                req = out.erasure_request
                self.log_record(
                    req.to_json(),
                    req.subject_refs[0].encode(),
                    [("gateway-kind", b"erasure_request")],
                )

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
        """Publish ``raws`` (keyed by ``keys``), then process each as it was published."""
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
            mac=self.mac,
            partitions=PARTITIONS,
            now_ms=self.now_ms,
        )


def keyed(events: list[dict]) -> tuple[list[bytes], list[bytes]]:
    return (
        [orjson.dumps(e) for e in events],
        [e["subject"]["customer_id"].encode() for e in events],
    )


SCENARIO = keyed(scenario())


def first_message(sim: Sim, agent: str = "shipping") -> TopicMessage:
    return sim.agents[agent][0]
