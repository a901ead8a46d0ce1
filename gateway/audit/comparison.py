"""The comparison: what the replay expects against what the topics and the ledger hold.

One check per source, each adding its findings to the report:

* the disclosure topic (the records, acknowledged before any agent message is sent):
  readable, and copies of one record agree;
* the ledger store (the durable, tamper-evident log reviewers query): it holds every
  record the replay expects and the disclosure topic carries;
* every agent topic: each message has a record of the same disclosure id, for the same
  agent and topic, whose ``payload_digest`` is the SHA-256 of the message's exact bytes;
  and the ledger holds a *disclosure* of that id;
* the dead-letter topic: each rejected input, matched by the SHA-256 of its raw bytes.

Then every input is accounted for (its record, agent messages or dead letter found), the
recorded decisions are compared with the replay's, and ids no input explains are named.

Delivery is at least once, so after a crash the same ids legitimately appear more than
once on topics: they are counted as duplicates, never as gaps. A re-sent message is sealed
afresh (new nonce), so its bytes differ from the first issue; its record copy on the
disclosure topic carries the new digest while the ledger keeps the first copy: that is a
*re-issue*, fine as long as both copies record the same decision.

Whether a missing output is a gap or still in flight is decided by the gateway consumer
group's committed offsets: past them, the gateway has acknowledged the work.

Pure: works on what was read (see :mod:`gateway.audit.snapshot`), reads nothing itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from gateway.audit.model import DISCLOSING, Expected, Offsets, RecordedDecision, TopicMessage
from gateway.audit.report import Finding, ReconcileReport
from gateway.records import DecisionRecord, payload_digest

Copy = tuple[TopicMessage, DecisionRecord]


def compare(
    expected: Sequence[Expected],
    *,
    disclosures: Sequence[TopicMessage],
    ledger: Mapping[str, str | None],
    agent_messages: Mapping[str, Sequence[TopicMessage]],
    dead_letters: Sequence[TopicMessage],
    agent_topics: Mapping[str, str],
    policy_version: str | None = None,
    offsets: Offsets | None = None,
) -> ReconcileReport:
    """Compare the replay's expectation with what the topics and the ledger hold.

    ``ledger`` maps record id to the stored body (None once retention pruned it);
    ``agent_messages`` maps agent name to the messages of its topic; ``offsets`` are the
    gateway consumer group's committed offsets (input and disclosure topics), which
    separate what is lost from what is still in flight (None: everything counts as
    processed, which makes the comparison strict). ``policy_version``: replayed decisions
    are compared only with records made under this policy version.
    """
    report = ReconcileReport()
    report.counts.update(
        inputs=len(expected),
        disclosure_topic=len(disclosures),
        ledger=len(ledger),
        dead_letter_topic=len(dead_letters),
        agent_messages=sum(len(v) for v in agent_messages.values()),
        agents=len(agent_topics),
    )
    expected_ids = {rid for e in expected for rid in e.records}
    stored = LedgerContents(ledger)

    records = check_disclosure_topic(disclosures, report)
    check_ledger(expected, records, stored, offsets, report)
    sent = check_agent_topics(agent_messages, records, stored, expected_ids, offsets, report)
    dead = check_dead_letter_topic(dead_letters, expected, report)

    account_for_inputs(expected, records, sent, dead, offsets, report)
    check_replayed_decisions(expected, records, policy_version, report)
    check_unexplained_records(records, expected_ids, report)
    check_event_ids(expected, report)
    return report


# --- what was read, indexed ----------------------------------------------------------------


@dataclass
class DisclosureTopic:
    """The disclosure topic, indexed: every readable copy of every record."""

    copies: dict[str, list[Copy]] = field(default_factory=dict)  # record id -> copies
    by_digest: dict[str, Copy] = field(default_factory=dict)  # payload digest -> first copy

    def first(self, record_id: str) -> TopicMessage:
        return self.copies[record_id][0][0]


class LedgerContents:
    """The ledger store as read (record id -> stored body, None once pruned by retention),
    each body parsed when first needed."""

    def __init__(self, bodies: Mapping[str, str | None]) -> None:
        self._bodies = bodies
        self._parsed: dict[str, DecisionRecord | None] = {}

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._bodies

    def record(self, record_id: str) -> DecisionRecord | None:
        """The stored record (None if pruned; the id must be in the ledger)."""
        if record_id not in self._parsed:
            body = self._bodies[record_id]
            self._parsed[record_id] = None if body is None else DecisionRecord.from_json(body)
        return self._parsed[record_id]


def claimed_disclosure_id(message: bytes) -> str | None:
    """The disclosure id in a sealed message's clear header (unauthenticated here: the
    auditor has no agent key; only the digest match with a record vouches for it)."""
    try:
        did = orjson.loads(message)["header"]["disclosure_id"]
    except Exception:  # not a sealed message at all
        return None
    return did if isinstance(did, str) and len(did) <= 64 else None


def _processed(offsets: Offsets | None, m: TopicMessage) -> bool:
    """Whether the consumer group has committed past ``m`` (no offsets known: assume so,
    which makes the comparison strict)."""
    return offsets is None or m.offset < offsets.get((m.topic, m.partition), 0)


def _gap_unless_in_flight(
    report: ReconcileReport, finding: Finding, m: TopicMessage, offsets: Offsets | None
) -> None:
    """A shortfall concerning ``m`` is a gap once the gateway has committed past ``m``,
    and pending work before that."""
    (report.findings if _processed(offsets, m) else report.pending).append(finding)


def _parse_record(m: TopicMessage) -> DecisionRecord | None:
    try:
        return DecisionRecord.from_json(m.value)
    except Exception:  # anything unreadable is reported, never fatal to the audit
        return None


def _unledgered(
    report: ReconcileReport,
    records: DisclosureTopic,
    offsets: Offsets | None,
    record_id: str,
    what: str,
    event_id: str | None,
    agent: str | None,
) -> None:
    """``record_id`` is on the disclosure topic but not in the ledger: a gap once the
    ledger sink has committed past its first copy, in flight before that."""
    first = records.first(record_id)
    finding = Finding("unledgered", what, first.position, event_id, record_id, agent)
    _gap_unless_in_flight(report, finding, first, offsets)


# --- one check per source --------------------------------------------------------------------


def check_disclosure_topic(
    disclosures: Sequence[TopicMessage], report: ReconcileReport
) -> DisclosureTopic:
    """Index the disclosure topic by record id and by payload digest. Unreadable entries
    are ``malformed``; copies of one record that record different decisions are a
    ``conflict``; extra copies are duplicates."""
    topic = DisclosureTopic()
    for m in disclosures:
        rec = _parse_record(m)
        if rec is None:
            report.findings.append(Finding("malformed", "not a decision record", m.position))
            continue
        topic.copies.setdefault(rec.record_id, []).append((m, rec))
        if rec.payload_digest:
            topic.by_digest.setdefault(rec.payload_digest, (m, rec))
    report.duplicates["disclosure_topic"] = sum(len(v) - 1 for v in topic.copies.values())
    for rid, cs in topic.copies.items():
        if len({RecordedDecision.of(r) for _, r in cs}) > 1:
            m, rec = cs[0]
            report.findings.append(
                Finding(
                    "conflict",
                    "copies of this record on the disclosure topic record "
                    "different decisions (reprocessed with other consent state, or an "
                    "event id reused)",
                    m.position,
                    rec.event_id,
                    rid,
                    rec.agent,
                )
            )
    return topic


def check_ledger(
    expected: Sequence[Expected],
    records: DisclosureTopic,
    ledger: LedgerContents,
    offsets: Offsets | None,
    report: ReconcileReport,
) -> None:
    """Every expected record the disclosure topic carries is in the ledger
    (``unledgered`` otherwise). A record missing from the topic too is a lost event,
    reported by :func:`account_for_inputs`."""
    for e in expected:
        for rid, dec in e.records.items():
            if rid in records.copies and rid not in ledger:
                what = f"record for {dec.agent} not in the ledger"
                _unledgered(report, records, offsets, rid, what, e.event_id, dec.agent)


def check_agent_topics(
    agent_messages: Mapping[str, Sequence[TopicMessage]],
    records: DisclosureTopic,
    ledger: LedgerContents,
    expected_ids: set[str],
    offsets: Offsets | None,
    report: ReconcileReport,
) -> dict[str, set[str]]:
    """Each agent message is a logged disclosure of exactly its bytes: its record is on
    the disclosure topic (``unlogged`` otherwise) and in the ledger as a disclosure to
    this agent (``unledgered`` or ``unlogged``); one no input explains is ``unexpected``.

    Messages are matched by the digest of their exact bytes, not by the id they claim:
    ids repeat legitimately (redelivery), bytes never do (a fresh nonce). Returns the
    disclosure ids each agent was sent.
    """
    sent: dict[str, set[str]] = defaultdict(set)
    for agent, msgs in sorted(agent_messages.items()):
        seen: Counter[str] = Counter()
        for m in msgs:
            digest = payload_digest(m.value)
            claimed = claimed_disclosure_id(m.value)
            seen[claimed or digest] += 1
            rec = _logged_disclosure(agent, m, digest, claimed, records, report)
            if rec is None:
                continue
            sent[agent].add(rec.record_id)
            if rec.record_id not in expected_ids:
                report.findings.append(
                    Finding(
                        "unexpected",
                        "a disclosure no input event explains",
                        m.position,
                        rec.event_id,
                        rec.record_id,
                        agent,
                    )
                )
            _check_ledger_copy(agent, m, digest, rec, records, ledger, offsets, report)
        report.duplicates[f"agent:{agent}"] = sum(n - 1 for n in seen.values())
    return dict(sent)


def _logged_disclosure(
    agent: str,
    m: TopicMessage,
    digest: str,
    claimed: str | None,
    records: DisclosureTopic,
    report: ReconcileReport,
) -> DecisionRecord | None:
    """The record of exactly these bytes, if it is a disclosure to ``agent`` on this
    topic; otherwise the message is ``unlogged`` (and None is returned)."""
    hit = records.by_digest.get(digest)
    if hit is None:
        why = "no record of these exact bytes on the disclosure topic" + (
            " (a record with the id it claims exists, for other bytes)"
            if claimed in records.copies
            else ""
        )
        report.findings.append(Finding("unlogged", why, m.position, None, claimed, agent))
        return None
    _, rec = hit
    if rec.agent != agent or rec.topic != m.topic or rec.outcome not in DISCLOSING:
        report.findings.append(
            Finding(
                "unlogged",
                f"its record is a {rec.outcome} for agent "
                f"{rec.agent!r} on {rec.topic!r}, not a disclosure on this topic",
                m.position,
                rec.event_id,
                rec.record_id,
                agent,
            )
        )
        return None
    return rec


def _check_ledger_copy(
    agent: str,
    m: TopicMessage,
    digest: str,
    rec: DecisionRecord,
    records: DisclosureTopic,
    ledger: LedgerContents,
    offsets: Offsets | None,
    report: ReconcileReport,
) -> None:
    """The ledger holds a disclosure to ``agent`` under the id of the message's record
    ``rec``. A ledger copy of other bytes is a re-issue (the ledger keeps the first
    issue), a ``conflict`` if it records another decision."""
    did = rec.record_id
    if did not in ledger:
        what = "disclosed, but the ledger holds no record of it"
        _unledgered(report, records, offsets, did, what, rec.event_id, agent)
        return
    stored = ledger.record(did)
    if stored is None:  # pruned by retention: nothing left to compare
        return
    if stored.outcome not in DISCLOSING or stored.agent != agent:
        report.findings.append(
            Finding(
                "unlogged",
                f"disclosed, but the ledger records a "
                f"{stored.outcome} for agent {stored.agent!r} under this id",
                m.position,
                rec.event_id,
                did,
                agent,
            )
        )
    elif stored.payload_digest != digest:
        report.reissued += 1
        if RecordedDecision.of(stored) != RecordedDecision.of(rec):
            report.findings.append(
                Finding(
                    "conflict",
                    "re-sent with a different decision than the ledger's copy records",
                    m.position,
                    rec.event_id,
                    did,
                    agent,
                )
            )


def check_dead_letter_topic(
    dead_letters: Sequence[TopicMessage], expected: Sequence[Expected], report: ReconcileReport
) -> Counter[str]:
    """Read the input digest of each dead letter (``malformed`` if there is none); copies
    beyond what the inputs explain are duplicates. Returns the number of dead letters per
    input digest."""
    seen: Counter[str] = Counter()
    for m in dead_letters:
        try:
            digest = orjson.loads(m.value)["digest"]
            if not isinstance(digest, str):
                raise TypeError
        except Exception:
            report.findings.append(Finding("malformed", "not a dead letter", m.position))
            continue
        seen[digest] += 1
    wanted = Counter(e.digest for e in expected if e.event_id is None)
    report.duplicates["dead_letter_topic"] = sum(
        max(0, n - wanted.get(d, 0)) for d, n in seen.items()
    )
    return seen


# --- every input accounted for ---------------------------------------------------------------


def account_for_inputs(
    expected: Sequence[Expected],
    records: DisclosureTopic,
    sent: Mapping[str, set[str]],
    dead_letters: Counter[str],
    offsets: Offsets | None,
    report: ReconcileReport,
) -> None:
    """Every input has all its outputs: its dead letter, or each of its records and the
    agent message of each logged disclosure. One missing is ``lost`` once the gateway has
    committed past the input, pending before that. Also counts what the inputs expect.

    ``dead_letters`` (dead letters per input digest) is used up as inputs claim them, so
    two identical rejected inputs need two dead letters.
    """
    dead_left = Counter(dead_letters)
    for e in expected:
        missing: list[str] = []
        if e.event_id is None:
            report.counts["expected_dead_letters"] += 1
            if dead_left[e.digest] > 0:
                dead_left[e.digest] -= 1
            else:
                missing.append(f"no dead letter ({e.dead_letter})")
        else:
            report.counts["events"] += 1
            report.counts["expected_records"] += len(e.records)
            for rid, dec in e.records.items():
                copies = records.copies.get(rid)
                if copies is None:
                    missing.append(f"no record for {dec.agent} ({dec.outcome})")
                    continue
                if dec.discloses:
                    # A message is owed once a copy of its record logs a disclosure.
                    report.counts["expected_messages"] += 1
                    if rid not in sent.get(dec.agent, ()) and any(
                        RecordedDecision.of(r).discloses for _, r in copies
                    ):
                        missing.append(f"no message to {dec.agent}")
        if missing:
            finding = Finding("lost", "; ".join(missing), e.message.position, e.event_id)
            _gap_unless_in_flight(report, finding, e.message, offsets)


def check_replayed_decisions(
    expected: Sequence[Expected],
    records: DisclosureTopic,
    policy_version: str | None,
    report: ReconcileReport,
) -> None:
    """The record of each expected decision records what the replay decides: if no copy
    made under ``policy_version`` (any copy, when None) agrees, that is a ``conflict``."""
    for e in expected:
        for rid, dec in e.records.items():
            recorded = [
                r
                for _, r in records.copies.get(rid, ())
                if policy_version is None or r.policy_version == policy_version
            ]
            if recorded and all(RecordedDecision.of(r) != dec for r in recorded):
                got = recorded[0]
                report.findings.append(
                    Finding(
                        "conflict",
                        f"recorded {got.outcome} for {dec.agent}; the replay decides {dec.outcome}",
                        e.message.position,
                        e.event_id,
                        rid,
                        dec.agent,
                    )
                )


def check_unexplained_records(
    records: DisclosureTopic, expected_ids: set[str], report: ReconcileReport
) -> None:
    """A record on the disclosure topic that no input event explains is ``unexpected``."""
    for rid, cs in records.copies.items():
        if rid not in expected_ids:
            m, rec = cs[0]
            report.findings.append(
                Finding(
                    "unexpected",
                    "a record no input event explains",
                    m.position,
                    rec.event_id,
                    rid,
                    rec.agent,
                )
            )


def check_event_ids(expected: Sequence[Expected], report: ReconcileReport) -> None:
    """Inputs sharing an event id: the same bytes republished are duplicates; different
    events under one id are a ``duplicate_event_id`` (their record ids collide)."""
    by_event: dict[str, list[Expected]] = defaultdict(list)
    for e in expected:
        if e.event_id is not None:
            by_event[e.event_id].append(e)
    for event_id, es in by_event.items():
        if len(es) < 2:
            continue
        if len({e.digest for e in es}) == 1:
            report.duplicates["input_republished"] += len(es) - 1
        else:
            report.findings.append(
                Finding(
                    "duplicate_event_id",
                    f"{len(es)} different events share this id "
                    "(their records collide; agents drop all but the first)",
                    es[1].message.position,
                    event_id,
                )
            )
