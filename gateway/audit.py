"""Reconciliation (SPEC §8): every input event accounted for, every disclosure logged.

The auditor trusts none of the gateway's bookkeeping. It replays the input topic, partition
by partition in offset order, through the same offline :class:`~gateway.pipeline.Pipeline`
the worker runs (same policy, same consent rules, one consent table per partition as the
worker keeps it), which yields the exact record ids each event must have caused: record,
decision and disclosure ids are deterministic functions of the event id, agent and kind.
It then compares that expectation with what is really there:

* the disclosure topic (the records, acknowledged before any agent message is sent),
* the ledger store (the durable, tamper-evident log reviewers query),
* every agent topic (each message must have a record with the same disclosure id, for the
  same agent and topic, whose ``payload_digest`` is the SHA-256 of the message's exact
  bytes; and the ledger must hold a *disclosure* of that id),
* the dead-letter topic (each rejected input, matched by the SHA-256 of its raw bytes).

Delivery is at least once, so after a crash the same ids legitimately appear more than
once on topics: they are counted as duplicates, never as gaps. A re-sent message is sealed
afresh (new nonce), so its bytes differ from the first issue; its record copy on the
disclosure topic carries the new digest while the ledger keeps the first copy: that is a
*re-issue*, fine as long as both copies record the same decision.

Findings are split into

* **gaps** (the promises of §8 broken): ``lost`` — a processed input event with an output
  missing (record, agent message or dead letter); ``unlogged`` — an agent message without
  a record of its exact bytes, or one the ledger records as a withholding;
  ``unledgered`` — a record the ledger sink has consumed but the ledger does not hold;
* **pending**: outputs missing for input the worker has not committed yet (still in
  flight; not a gap unless it stays so);
* **warnings**: ``conflict`` (copies of one id record different decisions, or differ from
  the replay), ``unexpected`` (ids no input explains), ``malformed`` (unreadable entries),
  ``duplicate_event_id`` (distinct inputs sharing an event id).

Nothing here reads or prints personal data: findings name positions, ids, agents and
reasons; inputs are identified by digest.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.consent import ConsentState
from gateway.records import DecisionRecord, payload_digest

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline
    from gateway.settings import Settings

DISCLOSING = frozenset({"disclosed", "erasure_notice"})
GAP_KINDS = ("lost", "unlogged", "unledgered")
WARNING_KINDS = ("conflict", "unexpected", "malformed", "duplicate_event_id")

Offsets = Mapping[tuple[str, int], int]


# --- what was read ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """One message as read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The part of a record that says what was decided (not when, nor the sealed bytes)."""

    agent: str
    outcome: str
    paths_sent: tuple[str, ...]
    paths_transformed: tuple[str, ...]

    @classmethod
    def of(cls, rec: DecisionRecord) -> Decision:
        return cls(rec.agent, rec.outcome, tuple(sorted(rec.paths_sent)),
                   tuple(sorted(rec.paths_transformed)))

    @property
    def discloses(self) -> bool:
        return self.outcome in DISCLOSING


@dataclass(slots=True)
class Expected:
    """What one input message must have caused."""

    message: TopicMessage
    digest: str  # sha256 of the raw input: how its dead letter is recognised
    event_id: str | None = None  # None: the input must be dead-lettered
    dead_letter: str | None = None  # the reason, when dead-lettered
    records: dict[str, Decision] = field(default_factory=dict)


# --- what was found --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    what: str
    position: str | None = None
    event_id: str | None = None
    record_id: str | None = None
    agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("kind", self.kind), ("what", self.what),
                                  ("position", self.position), ("event_id", self.event_id),
                                  ("record_id", self.record_id), ("agent", self.agent))
                if v is not None}


@dataclass
class ReconcileReport:
    counts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    pending: list[Finding] = field(default_factory=list)
    # Extra copies per place (at-least-once delivery after a crash): expected, harmless.
    duplicates: Counter[str] = field(default_factory=Counter)
    reissued: int = 0

    def of(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def gaps(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in GAP_KINDS]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.kind in WARNING_KINDS]

    def ok(self, strict: bool = False) -> bool:
        """No gap; with ``strict`` also nothing pending and no warning."""
        if strict:
            return not self.findings and not self.pending
        return not self.gaps

    def summary(self) -> dict[str, int]:
        kinds = Counter(f.kind for f in self.findings)
        return {**{k: kinds.get(k, 0) for k in (*GAP_KINDS, *WARNING_KINDS)},
                "pending": len(self.pending)}

    def to_dict(self, limit: int | None = 100) -> dict[str, Any]:
        def cut(items: list[Finding]) -> list[dict[str, Any]]:
            return [f.to_dict() for f in (items if limit is None else items[:limit])]

        return {
            "ok": self.ok(),
            "counts": dict(sorted(self.counts.items())),
            "summary": self.summary(),
            "duplicates": dict(sorted(self.duplicates.items())),
            "reissued": self.reissued,
            "gaps": cut(self.gaps),
            "warnings": cut(self.warnings),
            "pending": cut(self.pending),
        }


# --- the replay --------------------------------------------------------------------------


def claimed_disclosure_id(message: bytes) -> str | None:
    """The disclosure id in a sealed message's clear header (unauthenticated here: the
    auditor has no agent key; only the digest match with a record vouches for it)."""
    try:
        did = orjson.loads(message)["header"]["disclosure_id"]
    except Exception:  # not a sealed message at all
        return None
    return did if isinstance(did, str) and len(did) <= 64 else None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect(pipeline: Pipeline, inputs: Iterable[TopicMessage]) -> list[Expected]:
    """Replay ``inputs`` through ``pipeline`` the way the worker processes them: each
    partition in offset order against its own consent table (the worker keeps consent
    state per input partition; a customer's events share one only because they are keyed
    by customer id, which a raw producer need not respect)."""
    states: dict[tuple[str, int], dict[str, ConsentState]] = defaultdict(dict)
    out = []
    for m in sorted(inputs, key=lambda m: (m.topic, m.partition, m.offset)):
        exp = Expected(m, sha256(m.value))
        try:
            outcome = pipeline.process(m.value, states[(m.topic, m.partition)])
        except Exception as e:  # the worker dead-letters a crash of the core, so must we
            exp.dead_letter = f"internal_error ({type(e).__name__})"
            out.append(exp)
            continue
        if outcome.dead_letter is not None or outcome.event is None:
            exp.dead_letter = outcome.dead_letter.reason if outcome.dead_letter else "?"
        else:
            exp.event_id = outcome.event.event_id
            exp.records = {r.record_id: Decision.of(r) for r in outcome.records}
        out.append(exp)
    return out


# --- the comparison ----------------------------------------------------------------------


def _processed(offsets: Offsets | None, m: TopicMessage) -> bool:
    """Whether the consumer group has committed past ``m`` (no offsets known: assume so,
    which makes the comparison strict)."""
    return offsets is None or m.offset < offsets.get((m.topic, m.partition), 0)


def _parse_record(m: TopicMessage) -> DecisionRecord | None:
    try:
        return DecisionRecord.from_json(m.value)
    except Exception:  # anything unreadable is reported, never fatal to the audit
        return None


def compare(expected: Sequence[Expected], *, disclosures: Sequence[TopicMessage],
            ledger: Mapping[str, str | None], agent_messages: Mapping[str, Sequence[TopicMessage]],
            dead_letters: Sequence[TopicMessage], agent_topics: Mapping[str, str],
            policy_version: str | None = None, offsets: Offsets | None = None
            ) -> ReconcileReport:
    """Compare the replay's expectation with what the topics and the ledger hold.

    ``ledger`` maps record id to the stored body (None once retention pruned it);
    ``agent_messages`` maps agent name to the messages of its topic; ``offsets`` are the
    gateway consumer group's committed offsets (input and disclosure topics), which
    separate what is lost from what is still in flight. ``policy_version``: replayed
    decisions are compared only with records made under this policy version.
    """
    rep = ReconcileReport()
    add = rep.findings.append
    rep.counts.update(inputs=len(expected), disclosure_topic=len(disclosures),
                      ledger=len(ledger), dead_letter_topic=len(dead_letters),
                      agent_messages=sum(len(v) for v in agent_messages.values()))

    # The disclosure topic: every copy of every record, by id and by (id, digest).
    copies: dict[str, list[tuple[TopicMessage, DecisionRecord]]] = defaultdict(list)
    by_digest: dict[str, tuple[TopicMessage, DecisionRecord]] = {}
    for m in disclosures:
        rec = _parse_record(m)
        if rec is None:
            add(Finding("malformed", "not a decision record", m.position))
            continue
        copies[rec.record_id].append((m, rec))
        if rec.payload_digest:
            by_digest.setdefault(rec.payload_digest, (m, rec))
    rep.duplicates["disclosure_topic"] = sum(len(v) - 1 for v in copies.values())
    for rid, cs in copies.items():
        if len({Decision.of(r) for _, r in cs}) > 1:
            add(Finding("conflict", "copies of this record on the disclosure topic record "
                        "different decisions (reprocessed with other consent state, or an "
                        "event id reused)", cs[0][0].position, cs[0][1].event_id, rid,
                        cs[0][1].agent))

    ledger_cache: dict[str, DecisionRecord | None] = {}

    def in_ledger(rid: str) -> DecisionRecord | None:
        if rid not in ledger_cache:
            body = ledger.get(rid)
            ledger_cache[rid] = None if body is None else DecisionRecord.from_json(body)
        return ledger_cache[rid]

    def ledger_missing(rid: str, what: str, event_id: str | None, agent: str | None) -> None:
        """``rid`` is on the disclosure topic but not in the ledger: a gap once the sink
        has committed past its first copy, in flight before that."""
        first = copies[rid][0][0]
        f = Finding("unledgered", what, first.position, event_id, rid, agent)
        if _processed(offsets, first):
            add(f)
        else:
            rep.pending.append(f)

    # The agent topics: each message must be a logged disclosure of exactly these bytes.
    sent: dict[str, set[str]] = defaultdict(set)
    expected_ids = {rid for e in expected for rid in e.records}
    for agent, msgs in sorted(agent_messages.items()):
        seen: Counter[str] = Counter()
        for m in msgs:
            digest = payload_digest(m.value)
            claimed = claimed_disclosure_id(m.value)
            seen[claimed or digest] += 1
            # Matched by the digest of the exact bytes, not by the id the message claims:
            # ids repeat legitimately (redelivery), bytes never do (a fresh nonce).
            hit = by_digest.get(digest)
            if hit is None:
                why = ("no record of these exact bytes on the disclosure topic"
                       + (" (a record with the id it claims exists, for other bytes)"
                          if claimed in copies else ""))
                add(Finding("unlogged", why, m.position, None, claimed, agent))
                continue
            _, rec = hit
            did = rec.record_id
            if rec.agent != agent or rec.topic != m.topic or rec.outcome not in DISCLOSING:
                add(Finding("unlogged", f"its record is a {rec.outcome} for agent "
                            f"{rec.agent!r} on {rec.topic!r}, not a disclosure on this topic",
                            m.position, rec.event_id, did, agent))
                continue
            sent[agent].add(did)
            if did not in expected_ids:
                add(Finding("unexpected", "a disclosure no input event explains", m.position,
                            rec.event_id, did, agent))
            if did not in ledger:
                ledger_missing(did, "disclosed, but the ledger holds no record of it",
                               rec.event_id, agent)
                continue
            stored = in_ledger(did)
            if stored is None:  # pruned by retention: nothing left to compare
                continue
            if stored.outcome not in DISCLOSING or stored.agent != agent:
                add(Finding("unlogged", f"disclosed, but the ledger records a "
                            f"{stored.outcome} for agent {stored.agent!r} under this id",
                            m.position, rec.event_id, did, agent))
            elif stored.payload_digest != digest:
                rep.reissued += 1  # a redelivery: the ledger holds the first issue
                if Decision.of(stored) != Decision.of(rec):
                    add(Finding("conflict", "re-sent with a different decision than the "
                                "ledger's copy records", m.position, rec.event_id, did, agent))
        rep.duplicates[f"agent:{agent}"] = sum(n - 1 for n in seen.values())

    # The dead-letter topic, by digest of the rejected input.
    dead_seen: Counter[str] = Counter()
    for m in dead_letters:
        try:
            digest = orjson.loads(m.value)["digest"]
            if not isinstance(digest, str):
                raise TypeError
        except Exception:
            add(Finding("malformed", "not a dead letter", m.position))
            continue
        dead_seen[digest] += 1
    dead_expected = Counter(e.digest for e in expected if e.event_id is None)
    rep.duplicates["dead_letter_topic"] = sum(
        max(0, n - dead_expected.get(d, 0)) for d, n in dead_seen.items())

    # Every input: accounted for, or lost (processed per the committed offsets), or pending.
    dead_left = Counter(dead_seen)
    for e in expected:
        missing: list[str] = []
        if e.event_id is None:
            rep.counts["expected_dead_letters"] += 1
            if dead_left[e.digest] > 0:
                dead_left[e.digest] -= 1
            else:
                missing.append(f"no dead letter ({e.dead_letter})")
        else:
            rep.counts["events"] += 1
            rep.counts["expected_records"] += len(e.records)
            for rid, dec in e.records.items():
                if rid not in copies:
                    missing.append(f"no record for {dec.agent} ({dec.outcome})")
                    continue
                if rid not in ledger:
                    ledger_missing(rid, f"record for {dec.agent} not in the ledger",
                                   e.event_id, dec.agent)
                if dec.discloses:
                    rep.counts["expected_messages"] += 1
                    if rid not in sent[dec.agent] and any(
                            Decision.of(r).discloses for _, r in copies[rid]):
                        missing.append(f"no message to {dec.agent}")
                recorded = [r for _, r in copies[rid]
                            if policy_version is None or r.policy_version == policy_version]
                if recorded and all(Decision.of(r) != dec for r in recorded):
                    got = recorded[0]
                    add(Finding("conflict", f"recorded {got.outcome} for {dec.agent}; the "
                                f"replay decides {dec.outcome}", e.message.position,
                                e.event_id, rid, dec.agent))
        if missing:
            f = Finding("lost", "; ".join(missing), e.message.position, e.event_id)
            if _processed(offsets, e.message):
                add(f)
            else:
                rep.pending.append(f)

    for rid, cs in copies.items():
        if rid not in expected_ids:
            m, rec = cs[0]
            add(Finding("unexpected", "a record no input event explains", m.position,
                        rec.event_id, rid, rec.agent))

    by_event: dict[str, list[Expected]] = defaultdict(list)
    for e in expected:
        if e.event_id is not None:
            by_event[e.event_id].append(e)
    for event_id, es in by_event.items():
        if len(es) < 2:
            continue
        if len({e.digest for e in es}) == 1:
            rep.duplicates["input_republished"] += len(es) - 1
        else:
            add(Finding("duplicate_event_id", f"{len(es)} different events share this id "
                        "(their records collide; agents drop all but the first)",
                        es[1].message.position, event_id))
    rep.counts["agents"] = len(agent_topics)
    return rep


def reconcile(pipeline: Pipeline, inputs: Sequence[TopicMessage], **kw: Any) -> ReconcileReport:
    """:func:`expect` then :func:`compare` (keyword arguments as for ``compare``)."""
    kw.setdefault("policy_version", pipeline.engine.policy_version)
    return compare(expect(pipeline, inputs), **kw)


# --- reading a deployment ------------------------------------------------------------------

_POSITION = re.compile(r"^(.*)\[(\d+)\]@(\d+)$")


def read_messages(bootstrap: str, topic: str, timeout: float = 120.0,
                  quiet: float = 1.0) -> list[TopicMessage]:
    """All messages now on ``topic`` (read to its real end: see gateway.sdk.agent)."""
    from gateway.sdk.agent import read_topic

    out = []
    for position, value, key in read_topic(bootstrap, topic, timeout=timeout, quiet=quiet):
        match = _POSITION.match(position)
        if match is None:  # pragma: no cover - read_topic's own format
            raise ValueError(f"unexpected position {position!r}")
        out.append(TopicMessage(match[1], int(match[2]), int(match[3]), key, value or b""))
    return out


def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets (the next offset it would consume), per partition."""
    from kafka import KafkaAdminClient

    # A broker that does not answer within 10 s is reported, not waited for at length.
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","),
                             client_id="gateway-audit", bootstrap_timeout_ms=10_000)
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in got.items()
            if om is not None and om.offset is not None and om.offset >= 0}


def read_ledger(url: str) -> dict[str, str | None]:
    """Record id -> stored body (None when pruned) for the whole ledger."""
    import sqlalchemy as sa

    from gateway.ledger import schema as t
    from gateway.ledger.store import open_store

    store = open_store(url, create=False)
    try:
        c = t.records.c
        with store.engine.connect() as conn:
            rows = conn.execution_options(yield_per=5000).execute(
                sa.select(c.record_id, c.body))
            return {rid: body for rid, body in rows}
    finally:
        store.close()


@dataclass
class Snapshot:
    """Everything the auditor read, for :func:`compare` (and for tests to inspect)."""

    inputs: list[TopicMessage]
    disclosures: list[TopicMessage]
    dead_letters: list[TopicMessage]
    agent_messages: dict[str, list[TopicMessage]]
    agent_topics: dict[str, str]
    ledger: dict[str, str | None]
    offsets: dict[tuple[str, int], int] | None


def snapshot(settings: Settings, agent_topics: Mapping[str, str], *,
             use_offsets: bool = True, timeout: float = 120.0) -> Snapshot:
    """Read the input, disclosure, dead-letter and agent topics and the ledger.

    Offsets are read *first*: anything committed then has had its outputs written before,
    so reading the topics afterwards cannot mistake in-flight work for a loss.
    """
    bootstrap = settings.bootstrap_servers
    offsets = committed_offsets(bootstrap, settings.app_id) if use_offsets else None
    ledger = read_ledger(settings.ledger_url)
    topics = [settings.input_topic, settings.disclosure_topic, settings.dead_letter_topic,
              *agent_topics.values()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        read = dict(zip(topics, pool.map(lambda t: read_messages(bootstrap, t, timeout),
                                         topics), strict=True))
    return Snapshot(
        inputs=read[settings.input_topic], disclosures=read[settings.disclosure_topic],
        dead_letters=read[settings.dead_letter_topic],
        agent_messages={a: read[t] for a, t in agent_topics.items()},
        agent_topics=dict(agent_topics), ledger=ledger, offsets=offsets)


def reconcile_snapshot(pipeline: Pipeline, snap: Snapshot) -> ReconcileReport:
    return reconcile(pipeline, snap.inputs, disclosures=snap.disclosures, ledger=snap.ledger,
                     agent_messages=snap.agent_messages, dead_letters=snap.dead_letters,
                     agent_topics=snap.agent_topics, offsets=snap.offsets)


def reconcile_deployment(settings: Settings, *, pipeline: Pipeline | None = None,
                         use_offsets: bool = True, timeout: float = 120.0) -> ReconcileReport:
    """Reconcile the deployment ``settings`` describe (broker, topics, ledger, policy).

    The replay runs the core built from the same settings (policy file, keys), so it
    decides exactly as the workers do.
    """
    if pipeline is None:
        from gateway.runtime import build_core

        pipeline = build_core(settings).pipeline
    topics = {name: a.topic for name, a in pipeline.policy.agents.items()}
    return reconcile_snapshot(pipeline, snapshot(settings, topics, use_offsets=use_offsets,
                                                 timeout=timeout))


def reconcile_until_settled(run: Callable[[], ReconcileReport], wait: float,
                            interval: float = 2.0, *, offsets: bool = True) -> ReconcileReport:
    """Run ``run`` until nothing is pending, or ``wait`` seconds pass: a live deployment
    always has work in flight, and a sink that lags is not a loss.

    With committed ``offsets`` a gap is final (it concerns work the gateway had already
    committed), so only pending work is waited for; without them (every input counted as
    processed) a shortfall may still be in flight, so gaps are waited out too.
    """
    import time

    deadline = time.monotonic() + wait
    while True:
        rep = run()
        settled = not rep.pending and (offsets or rep.ok())
        if settled or time.monotonic() >= deadline:
            return rep
        time.sleep(interval)
