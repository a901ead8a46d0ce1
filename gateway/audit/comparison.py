"""The comparison: the admitted input, per customer, against what the topics and the
ledger hold.

The gateway decides a customer's events on the customer's subject partition, in the order
they arrive there, which the auditor cannot observe. So the audit is record-centred: every
record must be *one the gateway could have made*, and every input must have its outputs.

* **The disclosure topic** (decision records, acknowledged before any agent message is
  sent, and each subject's erasure request): each message carries the workers' MAC
  (``bad_mac`` otherwise, when the snapshot read headers; such a copy is not trusted as a
  record); copies of one record agree (``conflict``).
* **Every record** (on the topic or in the ledger): its event exists on the input, same id
  and content (``forged`` otherwise); its ``consent_state`` is one the customer could have
  had at that point (``impossible_state``, see :mod:`gateway.audit.states`); and what it
  records is what the engine decides for that event under that state, record id included
  (``conflict``). One event decided twice with different outcomes for one agent is a
  ``conflict`` too. Along each subject's records on the topic, states only move forward and
  an erasure is final (``impossible_state``).
* **The ledger** holds every record the disclosure topic carries (``unledgered``).
* **Every agent topic**: each message has a record of exactly its bytes, a disclosure to
  this agent on this topic (``unlogged`` otherwise), and the ledger holds a disclosure under
  its id (``unledgered``/``unlogged``).
* **Every input** is accounted for: a rejected one by its dead letter (matched by the
  SHA-256 of its bytes); an admitted one by a record per subscribed agent, or a dead letter
  whose reason its customer's input explains (a superseded or inapplicable state change, a
  type mismatch, a reused id); an erasure by its erasure request; a disclosing record by
  its agent message. One missing is ``lost`` once the gateway has committed past it,
  ``overdue`` once it is older than the pending deadline, and ``pending`` before that.
* **Event ids**: two different events under one id are ``event_id_reused``, whatever the
  worker did with them.

Every kind above is a failure except ``pending`` and the warnings ``malformed``
(unreadable entries) and ``unchecked`` (records without the event fingerprint and consent
state, written before records carried them: they cannot be re-decided).

Delivery is at least once, so after a crash the same ids legitimately appear more than
once on topics: they are counted as duplicates, never as gaps. A re-sent message is sealed
afresh (new nonce), so its bytes differ from the first issue; its record copy on the
disclosure topic carries the new digest while the ledger keeps the first copy: that is a
*re-issue*, fine as long as both copies record the same decision.

Pure: works on what was read (see :mod:`gateway.audit.snapshot`), reads nothing itself.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.audit.expectation import Copy, Histories, History
from gateway.audit.model import DISCLOSING, Expected, Offsets, RecordedDecision, TopicMessage
from gateway.audit.report import Finding, ReconcileReport
from gateway.audit.states import Rebuilt, behind, check_state
from gateway.consent import ERASURE, STATE_EVENTS, ConsentState, stamp_of
from gateway.engine import NOTICE_LEGAL_BASIS, NOTICE_PURPOSE
from gateway.erasure import ErasureRequest
from gateway.integrity import HEADER_MAC, WorkerMac, header
from gateway.pipeline import EventResult, Pipeline
from gateway.records import DecisionRecord, decision_digest, payload_digest
from gateway.routing import subject_partition

Copies = tuple[TopicMessage, DecisionRecord]

# Seconds an input may wait for its outputs before that is a failure (``overdue``).
PENDING_DEADLINE = 300.0
HEADER_KIND = "gateway-kind"

# Dead-letter reasons of the deciding step (the subject's state explains them); every other
# reason is the admission's, which the auditor computes exactly.
_DECIDE_REASONS = frozenset(
    {"superseded", "subject_erased", "subject_type_mismatch", "event_id_reused", "internal_error"}
)


@dataclass
class Context:
    """What the checks share: the admitted input, the pipeline to re-decide with, and how to
    tell work in flight from work that is late or lost."""

    pipeline: Pipeline
    histories: Histories
    offsets: Offsets | None = None
    partitions: int | None = None
    now_ms: int | None = None
    pending_deadline: float = PENDING_DEADLINE
    policy_version: str | None = None


def compare(
    expected: Sequence[Expected],
    *,
    pipeline: Pipeline,
    disclosures: Sequence[TopicMessage],
    ledger: Mapping[str, str | None],
    agent_messages: Mapping[str, Sequence[TopicMessage]],
    dead_letters: Sequence[TopicMessage],
    agent_topics: Mapping[str, str],
    policy_version: str | None = None,
    offsets: Offsets | None = None,
    mac: WorkerMac | None = None,
    partitions: int | None = None,
    now_ms: int | None = None,
    pending_deadline: float = PENDING_DEADLINE,
) -> ReconcileReport:
    """Compare the admitted input (:func:`~gateway.audit.expectation.expect`) with what the
    topics and the ledger hold.

    ``pipeline`` re-decides records (the core built from the deployment's own policy and
    keys). ``ledger`` maps record id to the stored body (None once retention pruned it);
    ``agent_messages`` maps agent name to the messages of its topic; ``offsets`` are the
    gateway consumer group's committed offsets (None: everything counts as processed,
    which makes the comparison strict). ``mac`` checks the workers' MAC on the disclosure
    topic (None, or messages read without headers: not checked). ``partitions``: the
    gateway's partition count, which tells an event decided on the partition it was read
    from (its committed offset proves it decided) from a forwarded one. ``now_ms`` and
    ``pending_deadline`` (seconds) turn work still missing after the deadline into
    ``overdue``. ``policy_version``: records are re-decided only when made under it
    (default: the pipeline's).
    """
    ctx = Context(
        pipeline,
        Histories.of(expected),
        offsets,
        partitions,
        now_ms,
        pending_deadline,
        policy_version or pipeline.policy_version,
    )
    report = ReconcileReport()
    report.counts.update(
        inputs=len(expected),
        disclosure_topic=len(disclosures),
        ledger=len(ledger),
        dead_letter_topic=len(dead_letters),
        agent_messages=sum(len(v) for v in agent_messages.values()),
        agents=len(agent_topics),
        events=sum(len(h.events) for h in ctx.histories.by_customer.values()),
        expected_dead_letters=sum(1 for e in expected if e.event is None),
        customers=len(ctx.histories.by_customer),
        expected_records=0,
        expected_messages=0,
        records_checked=0,
    )
    stored = LedgerContents(ledger)

    topic = check_disclosure_topic(disclosures, mac, report)
    check_ledger(topic, stored, ctx, report)
    checked = check_records(topic, stored, ctx, report)
    sent = check_agent_topics(agent_messages, topic, stored, ctx, report)
    dead = check_dead_letter_topic(dead_letters, expected, report)
    account_for_inputs(expected, topic, checked, sent, dead, ctx, report)
    check_order(topic, checked, ctx, report)
    check_event_ids(ctx.histories, report)
    return report


# --- what was read, indexed ----------------------------------------------------------------


@dataclass
class DisclosureTopic:
    """The disclosure topic, indexed: every trusted copy of every record, and the erasure
    requests."""

    copies: dict[str, list[Copies]] = field(default_factory=dict)  # record id -> copies
    by_digest: dict[str, Copies] = field(default_factory=dict)  # payload digest -> first copy
    requests: list[tuple[TopicMessage, ErasureRequest]] = field(default_factory=list)

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

    def __iter__(self) -> Any:
        return iter(self._bodies)

    def record(self, record_id: str) -> DecisionRecord | None:
        """The stored record (None if pruned or unreadable; the id must be in the ledger)."""
        if record_id not in self._parsed:
            body = self._bodies[record_id]
            try:
                self._parsed[record_id] = None if body is None else DecisionRecord.from_json(body)
            except Exception:  # reported by check_records as malformed
                self._parsed[record_id] = None
        return self._parsed[record_id]


def claimed_disclosure_id(message: bytes) -> str | None:
    """The disclosure id in a sealed message's clear header (unauthenticated here: the
    auditor has no agent key; only the digest match with a record vouches for it)."""
    try:
        did = orjson.loads(message)["header"]["disclosure_id"]
    except Exception:  # not a sealed message at all
        return None
    return did if isinstance(did, str) and len(did) <= 64 else None


def _parse_record(m: TopicMessage) -> DecisionRecord | None:
    try:
        return DecisionRecord.from_json(m.value)
    except Exception:  # anything unreadable is reported, never fatal to the audit
        return None


def _late(
    report: ReconcileReport,
    finding: Finding,
    ctx: Context,
    *,
    committed: bool,
    timestamp_ms: int,
) -> None:
    """A shortfall is ``lost`` once the gateway has committed past what owes it (or no
    offsets are known: strict), ``overdue`` once older than the deadline, else pending."""
    if ctx.offsets is None or committed:
        report.findings.append(finding)
        return
    if (
        ctx.now_ms is not None
        and timestamp_ms >= 0
        and ctx.now_ms - timestamp_ms > ctx.pending_deadline * 1000
    ):
        report.findings.append(
            Finding(
                "overdue",
                f"{finding.what} after more than {ctx.pending_deadline:g} s",
                finding.position,
                finding.event_id,
                finding.record_id,
                finding.agent,
            )
        )
        return
    report.pending.append(finding)


def _committed(ctx: Context, m: TopicMessage) -> bool:
    return ctx.offsets is not None and m.offset < ctx.offsets.get((m.topic, m.partition), 0)


def _input_late(report: ReconcileReport, finding: Finding, copy: Copy, ctx: Context) -> None:
    """A shortfall of an admitted event: its committed input offset proves it decided only
    where it was read on its own subject partition (a forwarded event is committed on the
    input once forwarded, and decided later)."""
    committed = False
    for e in copy.inputs:
        direct = ctx.partitions is None or (
            subject_partition(copy.event.customer_id, ctx.partitions) == e.message.partition
        )
        committed = committed or (direct and _committed(ctx, e.message))
    stamps = [e.message.timestamp_ms for e in copy.inputs if e.message.timestamp_ms >= 0]
    _late(report, finding, ctx, committed=committed, timestamp_ms=min(stamps, default=-1))


# --- the disclosure topic and the ledger ----------------------------------------------------


def check_disclosure_topic(
    disclosures: Sequence[TopicMessage], mac: WorkerMac | None, report: ReconcileReport
) -> DisclosureTopic:
    """Index the disclosure topic by record id and by payload digest. A message whose MAC
    does not verify is ``bad_mac`` and not trusted; unreadable entries are ``malformed``;
    copies of one record that record different decisions are a ``conflict``; extra copies
    are duplicates."""
    topic = DisclosureTopic()
    for m in disclosures:
        if (
            mac is not None
            and m.headers is not None
            and not mac.record_ok(m.value, header(m.headers, HEADER_MAC))
        ):
            report.findings.append(
                Finding(
                    "bad_mac",
                    "no valid workers' MAC: not written by a gateway worker",
                    m.position,
                    record_id=_claimed_record_id(m.value),
                )
            )
            continue
        if _is_erasure_request(m):
            try:
                topic.requests.append((m, ErasureRequest.from_json(m.value)))
            except Exception:
                report.findings.append(Finding("malformed", "not an erasure request", m.position))
            continue
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
                    "copies of this record on the disclosure topic record different decisions",
                    m.position,
                    rec.event_id,
                    rid,
                    rec.agent,
                )
            )
    return topic


def _is_erasure_request(m: TopicMessage) -> bool:
    if m.headers is not None:
        return header(m.headers, HEADER_KIND) == b"erasure_request"
    try:
        return orjson.loads(m.value).get("kind") == "erasure_request"
    except Exception:
        return False


def _claimed_record_id(value: bytes) -> str | None:
    try:
        rid = orjson.loads(value).get("record_id")
    except Exception:
        return None
    return rid if isinstance(rid, str) and len(rid) <= 64 else None


def check_ledger(
    topic: DisclosureTopic, ledger: LedgerContents, ctx: Context, report: ReconcileReport
) -> None:
    """Every record the disclosure topic carries is in the ledger (``unledgered`` once the
    ledger sink committed past its first copy; in flight before that)."""
    for rid, cs in topic.copies.items():
        if rid not in ledger:
            m, rec = cs[0]
            finding = Finding(
                "unledgered",
                f"record for {rec.agent} not in the ledger",
                m.position,
                rec.event_id,
                rid,
                rec.agent,
            )
            _late(report, finding, ctx, committed=_committed(ctx, m), timestamp_ms=m.timestamp_ms)


# --- every record: one the gateway could have made -------------------------------------------


@dataclass
class Checked:
    """The records that passed their own checks, by event content and agent, and the
    rebuilt state of each (for the order along the topic)."""

    by_event: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    states: dict[str, Rebuilt] = field(default_factory=dict)  # record id -> its state
    notices: dict[str, set[str]] = field(default_factory=dict)  # erasure fp -> agents
    wrong: set[str] = field(default_factory=set)  # ids not what the engine decides
    legacy: set[tuple[str, str]] = field(default_factory=set)  # (event id, agent) unchecked


def check_records(
    topic: DisclosureTopic, ledger: LedgerContents, ctx: Context, report: ReconcileReport
) -> Checked:
    """Each record (the ledger's copy where it has one, else the topic's first): its event
    exists on the input, its state is possible, its decision is the engine's under it."""
    checked = Checked()
    redecided: dict[tuple[str, bytes], EventResult] = {}
    ids = list(topic.copies) + [rid for rid in ledger if rid not in topic.copies]
    for rid in ids:
        rec = ledger.record(rid) if rid in ledger else None
        position = topic.first(rid).position if rid in topic.copies else None
        if rec is None:
            if rid in topic.copies:
                rec = topic.copies[rid][0][1]
            else:  # pruned, or unreadable
                continue
        elif rid in topic.copies and RecordedDecision.of(rec) not in {
            RecordedDecision.of(r) for _, r in topic.copies[rid]
        }:
            m, logged = topic.copies[rid][0]
            report.findings.append(
                Finding(
                    "conflict",
                    f"the ledger records {rec.outcome} under this id, the disclosure topic "
                    f"{logged.outcome}",
                    m.position,
                    rec.event_id,
                    rid,
                    rec.agent,
                )
            )
        _check_record(rec, rid, position, ctx, checked, redecided, report)
    return checked


def _check_record(
    rec: DecisionRecord,
    rid: str,
    position: str | None,
    ctx: Context,
    checked: Checked,
    redecided: dict[tuple[str, bytes], EventResult],
    report: ReconcileReport,
) -> None:
    def finding(kind: str, what: str) -> None:
        report.findings.append(Finding(kind, what, position, rec.event_id, rid, rec.agent))

    if rec.record_id != rid:
        finding("conflict", f"stored under id {rid} but is record {rec.record_id}")
        return
    if rec.consent_state is not None and "manual" in rec.consent_state:
        report.counts["manual_records"] += 1  # a reviewer's disclosure: no input event
        return
    if rec.event_fp is None:
        finding("unchecked", "a record without event fingerprint (written before they were)")
        # Still accounts for its event (by id): an upgraded deployment's old input is
        # not lost for lack of fields its records could not have.
        checked.legacy.add((rec.event_id, rec.agent))
        return
    copy = ctx.histories.copy(rec.event_fp)
    if copy is None or copy.event.event_id != rec.event_id:
        finding("forged", "no event with this id and content exists on the input")
        return
    hist = ctx.histories.by_fp[rec.event_fp]
    if rec.outcome == "erasure_notice":
        report.counts["records_checked"] += 1
        _check_notice(rec, copy, ctx, checked, finding)
        return
    if rec.consent_state is None:
        finding("unchecked", "a record without the consent state it consulted")
        return
    try:
        rebuilt, problems = check_state(
            rec.consent_state, copy, hist, reused=ctx.histories.reused_ids
        )
    except (ValueError, TypeError, AttributeError, KeyError):
        finding("impossible_state", "its consent state is not of the recorded shape")
        return
    report.counts["records_checked"] += 1
    # The event was decided (whether rightly is what follows): its input is accounted for.
    checked.by_event.setdefault((rec.event_fp, rec.agent), set()).add(rid)
    if rebuilt.legacy:
        report.counts["legacy_stamps"] += 1
    for p in problems:
        finding("impossible_state", p)
    checked.states[rid] = rebuilt
    if rec.policy_version != ctx.policy_version:
        report.counts["other_policy_records"] += 1
    else:
        why = _redecide(rec, copy, rebuilt.state, ctx, redecided)
        if why is not None:
            finding("conflict", why)
            checked.wrong.add(rid)


def _redecide(
    rec: DecisionRecord,
    copy: Copy,
    state: ConsentState,
    ctx: Context,
    cache: dict[tuple[str, bytes], EventResult],
) -> str | None:
    """Why ``rec`` is not what the engine decides for its event under ``state`` (None: it
    is, record id included)."""
    assert rec.consent_state is not None
    key = (copy.event.event_fp, orjson.dumps(rec.consent_state, option=orjson.OPT_SORT_KEYS))
    out = cache.get(key)
    if out is None:
        out = EventResult(event=copy.event)
        # The pipeline's own decision step, so the auditor decides exactly as the worker.
        ctx.pipeline._decisions(copy.event, state, out)
        cache[key] = out
    mine = next((r for r in out.records if r.agent == rec.agent), None)
    if mine is None:
        return f"{rec.agent} does not subscribe to {copy.event.event_type} events"
    if mine.consent_state != rec.consent_state:
        return "its consent state is not one the engine consults (not well-formed)"
    if RecordedDecision.of(mine) != RecordedDecision.of(rec) or mine.record_id != rec.record_id:
        return (
            f"recorded {rec.outcome} for {rec.agent}; under its own consent state the "
            f"engine decides {mine.outcome}"
            + (f" ({mine.reason})" if mine.reason else "")
            + ("" if mine.outcome != rec.outcome else " with other fields or id")
        )
    return None


def _check_notice(
    rec: DecisionRecord, copy: Copy, ctx: Context, checked: Checked, finding: Any
) -> None:
    """An erasure notice: for an erasure request on the input, under the id its request
    and agent give."""
    if copy.event.event_type != ERASURE:
        finding("forged", "an erasure notice for an event that is no erasure request")
        return
    digest = decision_digest(
        "erasure_notice",
        None,
        [],
        [],
        [],
        [NOTICE_PURPOSE],
        [NOTICE_LEGAL_BASIS],
        rec.policy_version,
    )
    if rec.record_id != ctx.pipeline.ids.record_id(
        copy.event.event_fp, rec.agent, "erasure", digest
    ):
        finding("conflict", "an erasure notice under an id its request does not give")
        return
    checked.notices.setdefault(copy.event.event_fp, set()).add(rec.agent)


def check_order(
    topic: DisclosureTopic, checked: Checked, ctx: Context, report: ReconcileReport
) -> None:
    """Rule 4 of :mod:`gateway.audit.states`: along a subject's records on the disclosure
    topic (one partition, decision order), each state holds every earlier one; after the
    subject's erasure request every state is erased."""
    seq: dict[tuple[str, int], list[tuple[int, str, ConsentState, Copies | None]]] = defaultdict(
        list
    )
    for rid, cs in topic.copies.items():
        rebuilt = checked.states.get(rid)
        if rebuilt is None:
            continue
        m, rec = cs[0]
        hist = ctx.histories.by_fp[rec.event_fp or ""]
        seq[(hist.customer_id, m.partition)].append((m.offset, rid, rebuilt.state, (m, rec)))
    for m, req in topic.requests:
        copy = ctx.histories.copy(req.event_fp)
        if copy is None or copy.event.event_type != ERASURE:
            report.findings.append(
                Finding(
                    "forged",
                    "an erasure request for no erasure event on the input",
                    m.position,
                    req.event_id,
                )
            )
            continue
        erased = ConsentState(
            erased=True, erased_stamp=stamp_of(copy.event.occurred_at, copy.event.event_id)
        )
        seq[(copy.event.customer_id, m.partition)].append((m.offset, "", erased, None))
    for (cid, _part), items in seq.items():
        hist = ctx.histories.by_customer[cid]
        items.sort(key=lambda x: x[0])
        high: ConsentState | None = None
        for _offset, _rid, state, found in items:
            if high is not None and found is not None:
                lag = behind(state, high, hist)
                if lag:
                    m, rec = found
                    what = (
                        "decided after the subject's erasure, against a state without it"
                        if "erased" in lag
                        else "decided against a state older than an earlier record of the "
                        f"subject showed ({', '.join(lag)})"
                    )
                    report.findings.append(
                        Finding(
                            "impossible_state",
                            what,
                            m.position,
                            rec.event_id,
                            rec.record_id,
                            rec.agent,
                        )
                    )
                    continue
            high = state


# --- agent topics and dead letters --------------------------------------------------------


def check_agent_topics(
    agent_messages: Mapping[str, Sequence[TopicMessage]],
    topic: DisclosureTopic,
    ledger: LedgerContents,
    ctx: Context,
    report: ReconcileReport,
) -> dict[str, set[str]]:
    """Each agent message is a logged disclosure of exactly its bytes: its record is on
    the disclosure topic or in the ledger (``unlogged`` otherwise) and the ledger holds a
    disclosure of its id to this agent (``unledgered`` or ``unlogged``).

    Messages are matched by the digest of their exact bytes, not by the id they claim:
    ids repeat legitimately (redelivery), bytes never do (a fresh nonce). Returns the
    disclosure ids each agent was sent.
    """
    by_digest = dict(topic.by_digest)
    for rid in ledger:
        rec = ledger.record(rid)
        if rec is not None and rec.payload_digest and rec.payload_digest not in by_digest:
            by_digest[rec.payload_digest] = (
                TopicMessage("ledger", 0, 0, None, b""),
                rec,
            )
    sent: dict[str, set[str]] = defaultdict(set)
    for agent, msgs in sorted(agent_messages.items()):
        seen: Counter[str] = Counter()
        for m in msgs:
            digest = payload_digest(m.value)
            claimed = claimed_disclosure_id(m.value)
            seen[claimed or digest] += 1
            rec = _logged_disclosure(agent, m, digest, claimed, by_digest, topic, report)
            if rec is None:
                continue
            sent[agent].add(rec.record_id)
            _check_ledger_copy(agent, m, digest, rec, topic, ledger, ctx, report)
        report.duplicates[f"agent:{agent}"] = sum(n - 1 for n in seen.values())
    return dict(sent)


def _logged_disclosure(
    agent: str,
    m: TopicMessage,
    digest: str,
    claimed: str | None,
    by_digest: Mapping[str, Copies],
    topic: DisclosureTopic,
    report: ReconcileReport,
) -> DecisionRecord | None:
    """The record of exactly these bytes, if it is a disclosure to ``agent`` on this
    topic; otherwise the message is ``unlogged`` (and None is returned)."""
    hit = by_digest.get(digest)
    if hit is None:
        why = "no record of these exact bytes on the disclosure topic" + (
            " (a record with the id it claims exists, for other bytes)"
            if claimed in topic.copies
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
    topic: DisclosureTopic,
    ledger: LedgerContents,
    ctx: Context,
    report: ReconcileReport,
) -> None:
    """The ledger holds a disclosure to ``agent`` under the id of the message's record
    ``rec``. A ledger copy of other bytes is a re-issue (the ledger keeps the first
    issue), a ``conflict`` if it records another decision."""
    did = rec.record_id
    if did not in ledger:
        if did in topic.copies:
            first = topic.first(did)
            finding = Finding(
                "unledgered",
                "disclosed, but the ledger holds no record of it",
                first.position,
                rec.event_id,
                did,
                agent,
            )
            _late(
                report,
                finding,
                ctx,
                committed=_committed(ctx, first),
                timestamp_ms=first.timestamp_ms,
            )
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
) -> dict[str, Counter[str]]:
    """Read the input digest and reason of each dead letter (``malformed`` if there is
    none); copies beyond what the rejected inputs explain are duplicates. Returns the
    dead letters per input digest, counted by reason."""
    seen: dict[str, Counter[str]] = defaultdict(Counter)
    for m in dead_letters:
        try:
            doc = orjson.loads(m.value)
            digest, reason = doc["digest"], doc.get("reason", "")
            if not isinstance(digest, str) or not isinstance(reason, str):
                raise TypeError
        except Exception:
            report.findings.append(Finding("malformed", "not a dead letter", m.position))
            continue
        seen[digest][reason] += 1
    wanted = Counter(e.digest for e in expected if e.event is None)
    report.duplicates["dead_letter_topic"] = sum(
        max(0, sum(n.values()) - wanted.get(d, 0)) for d, n in seen.items() if d in wanted
    )
    return dict(seen)


# --- every input accounted for ---------------------------------------------------------------


def _explains(reason: str, copy: Copy, hist: History, ctx: Context) -> bool:
    """Whether the customer's input can explain dead-lettering ``copy`` for ``reason``."""
    ev = copy.event
    if reason == "internal_error":
        return True
    if reason == "event_id_reused":
        return ctx.histories.reused(ev.event_id)
    stamp = stamp_of(ev.occurred_at, ev.event_id)
    if reason == "superseded":
        return ev.event_type in STATE_EVENTS and any(s > stamp for s in hist.changes)
    if reason == "subject_erased":
        return ev.event_type in STATE_EVENTS and bool(hist.erasures())
    if reason == "subject_type_mismatch":
        return ev.event_type not in STATE_EVENTS and any(
            c.subject_type is not None and c.subject_type[0] != ev.subject_type
            for pairs in hist.changes.values()
            for c, _ in pairs
        )
    return False


def account_for_inputs(
    expected: Sequence[Expected],
    topic: DisclosureTopic,
    checked: Checked,
    sent: Mapping[str, set[str]],
    dead_letters: Mapping[str, Counter[str]],
    ctx: Context,
    report: ReconcileReport,
) -> None:
    """Every input has its outputs (see the module docstring); one missing is ``lost``,
    ``overdue`` or pending. Rejected inputs use up their dead letters, so two identical
    rejected inputs need two."""
    dead_left = {d: Counter(c) for d, c in dead_letters.items()}
    for e in expected:
        if e.event is None:
            left = dead_left.get(e.digest)
            if left and left[e.dead_letter or ""] > 0:
                left[e.dead_letter or ""] -= 1
            elif left and sum(left.values()) > 0:
                got = next(r for r, n in left.items() if n > 0)
                left[got] -= 1
                report.findings.append(
                    Finding(
                        "conflict",
                        f"dead-lettered {got}; its admission gives {e.dead_letter}",
                        e.message.position,
                    )
                )
            else:
                finding = Finding("lost", f"no dead letter ({e.dead_letter})", e.message.position)
                committed = _committed(ctx, e.message) or ctx.offsets is None
                _late(
                    report, finding, ctx, committed=committed, timestamp_ms=e.message.timestamp_ms
                )
    requested = {req.event_fp for _, req in topic.requests}
    for hist in ctx.histories.by_customer.values():
        for fp, copy in hist.events.items():
            report.duplicates["input_republished"] += len(copy.inputs) - 1
            _account_for_event(fp, copy, hist, topic, checked, dead_letters, requested, ctx, report)
    # A disclosing record owes its agent a message.
    for rid, cs in topic.copies.items():
        _, rec = cs[0]
        if rec.outcome != "disclosed" or rid not in checked.states:
            continue
        report.counts["expected_messages"] += 1
        if rid in sent.get(rec.agent, ()):
            continue
        owner = ctx.histories.copy(rec.event_fp)
        if owner is None:
            continue
        finding = Finding(
            "lost",
            f"no message to {rec.agent}",
            owner.inputs[0].message.position,
            rec.event_id,
            rid,
            rec.agent,
        )
        first = topic.first(rid)
        _late(
            report, finding, ctx, committed=_committed(ctx, first), timestamp_ms=first.timestamp_ms
        )


def _account_for_event(
    fp: str,
    copy: Copy,
    hist: History,
    topic: DisclosureTopic,
    checked: Checked,
    dead_letters: Mapping[str, Counter[str]],
    requested: set[str],
    ctx: Context,
    report: ReconcileReport,
) -> None:
    ev = copy.event
    dead = Counter[str]()
    for e in copy.inputs:
        dead.update(dead_letters.get(e.digest, Counter()))
    # Admission reasons belong to a copy rejected at admission (same bytes, other
    # headers): that copy's own expectation accounts for them.
    explained = [r for r in dead if r in _DECIDE_REASONS and _explains(r, copy, hist, ctx)]
    for r in dead:
        if r in _DECIDE_REASONS and r not in explained:
            report.findings.append(
                Finding(
                    "conflict",
                    f"dead-lettered {r}, which its customer's input cannot explain",
                    copy.inputs[0].message.position,
                    ev.event_id,
                )
            )
    if explained:
        return
    missing: list[str] = []
    if ev.event_type == ERASURE:
        others = [c for c in hist.erasures() if c is not copy]
        if fp not in requested and not others:
            missing.append("no erasure request logged")
    else:
        agents = ctx.pipeline.engine.subscribers.get(ev.event_type, ())
        report.counts["expected_records"] += len(agents)
        for agent in agents:
            rids = checked.by_event.get((fp, agent), set())
            if not rids and (ev.event_id, agent) in checked.legacy:
                continue
            if not rids:
                missing.append(f"no record for {agent}")
            elif len(rids - checked.wrong) > 1:
                # Record ids are content-addressed by the decision: other ids, other
                # decisions of one event for one agent.
                report.findings.append(
                    Finding(
                        "conflict",
                        f"decided more than once for {agent}, differently ({len(rids)} records)",
                        copy.inputs[0].message.position,
                        ev.event_id,
                        sorted(rids)[0],
                        agent,
                    )
                )
    if missing:
        finding = Finding("lost", "; ".join(missing), copy.inputs[0].message.position, ev.event_id)
        _input_late(report, finding, copy, ctx)


def check_event_ids(histories: Histories, report: ReconcileReport) -> None:
    """Different events under one event id are a failure (``event_id_reused``), whatever
    the worker did: the publisher broke the contract that lets duplicates be recognised,
    and one of them may have been dropped as a duplicate or rejected."""
    for event_id, fps in histories.fps_by_id.items():
        if len(fps) < 2:
            continue
        copies = [c for fp in sorted(fps) if (c := histories.copy(fp)) is not None]
        positions = sorted(
            (e.message for c in copies for e in c.inputs),
            key=lambda m: (m.topic, m.partition, m.offset),
        )
        customers = {c.event.customer_id for c in copies}
        report.findings.append(
            Finding(
                "event_id_reused",
                f"{len(fps)} different events share this id"
                + (f" ({len(customers)} customers)" if len(customers) > 1 else "")
                + "; at "
                + ", ".join(m.position for m in positions[:4]),
                positions[0].position if positions else None,
                event_id,
            )
        )
