"""Aggregate tables: the checks on what an aggregate-only agent was sent.

An agent of ``kind: aggregate`` (:mod:`gateway.aggregates`) gets no message per event:
each event it subscribes to has a ``contributed`` record (checked like any per-event
record, see :mod:`gateway.audit.comparison`), and each table emitted for one of its
windows is an ``aggregated`` record (subject type ``aggregate``, no subject) followed by
one sealed message of kind ``aggregate`` on the agent's topic. The auditor cannot open
the message (it has no agent key); what it checks is the record, which the workers' MAC
vouches for and which names the message by the digest of its exact bytes:

* **Declared** (``undeclared_aggregate``): the agent is an aggregate agent of the policy,
  the window is one of its window sizes (start aligned to the size), and the record
  describes exactly the policy's tables (``paths_sent``: ``table.dimension`` and
  ``table.measure``).
* **Well-formed** (``conflict``): the event id, event type, time, subject and topic are
  the ones :func:`gateway.aggregates.emit` gives that window and revision, the ``k`` it
  states is the policy's, and the record id is the one its content, reason, tables and
  purposes give under the workers' key (an edited record does not keep its id).
* **At least k** (``small_cell``): a table is sent only for a window with at least ``k``
  contributing customers (the agent's threshold); one from fewer -- or one stating
  "fewer than k" -- is a failure, whatever its cells show.

A record made under another policy version than the auditor's is held to the ``k`` it
states (never below the floor, :data:`gateway.policy.K_FLOOR`) and to its shape; its
windows and tables were that version's (counted as ``other_policy_records``), and its
window is not recomputed.
* **The final revision** (``aggregate_mismatch``, or ``lost`` when missing): the auditor
  recomputes every window from the input with :class:`gateway.aggregates.AggregateSet`,
  the contributions being those the engine decides for the verified ``contributed``
  records, and for each window *closed* by the input's watermark (every subject
  partition's latest event time past the window's end + grace) the latest revision sent
  must carry the recomputed table (its content fingerprint, ``event_fp``, compared under
  the revision number sent: intermediate revisions may differ between runs, the final one
  may not). A closed window the recomputation finds below ``k`` must have sent nothing.

Which events a window counts depends on the order its subject partition decided them
(an event later than its window's end + grace, by the partition's latest event time, is
counted as late instead). A subject partition whose events all come from one input
partition (publishers keying by customer id: the gateway reads them there) decides them in
that partition's offset order, which the recomputation follows exactly. One fed from
several input partitions (events forwarded to it, or republished) may interleave them in
any order, which the auditor cannot see: a window that an event of such a partition could
have reached late, in some order, is not compared (counted as ``uncertain``), nor is any
later window of that size (the late event is noted in the window open then).

Pure: works on records and the admitted input, reads nothing itself.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import orjson

from gateway.aggregates import (
    AggregateSet,
    AggregateTable,
    Contribution,
    parse_window,
    window_of,
)
from gateway.pipeline import Pipeline
from gateway.policy import K_FLOOR
from gateway.records import DecisionRecord, decision_digest
from gateway.routing import subject_partition

# What emit() writes as an aggregated record's reason.
_REASON = re.compile(
    r"^window (?P<start>\S+)/(?P<size>\S+) revision (?P<rev>0|[1-9][0-9]*): "
    r"(?P<customers>0|[1-9][0-9]*|fewer than k) contributing customers, "
    r"(?P<suppressed>0|[1-9][0-9]*) entries suppressed \(k=(?P<k>[0-9]+)\)$"
)


@dataclass(frozen=True, slots=True)
class SentTable:
    """What an ``aggregated`` record says was sent: the agent, the window (size and start
    in seconds), the revision and the contributing customers (None: "fewer than k")."""

    agent: str
    size: int
    start: int
    revision: int
    customers: int | None
    k: int

    @property
    def window(self) -> tuple[str, int, int]:
        return self.agent, self.size, self.start

    @property
    def label(self) -> str:
        return f"{_iso(self.start)}/{_size_text(self.size)}"


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _size_text(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def parse_reason(agent: str, reason: str | None) -> SentTable | None:
    """The window, revision and counts an aggregated record's reason states (None: not of
    the shape :func:`gateway.aggregates.emit` writes)."""
    m = _REASON.match(reason or "")
    if m is None:
        return None
    try:
        start = datetime.fromisoformat(m["start"].replace("Z", "+00:00"))
        size = int(parse_window(m["size"]).total_seconds())
    except ValueError:
        return None
    if start.tzinfo is None:
        return None
    customers = None if m["customers"] == "fewer than k" else int(m["customers"])
    return SentTable(agent, size, int(start.timestamp()), int(m["rev"]), customers, int(m["k"]))


def declared_paths(pipeline: Pipeline, agent: str) -> set[str]:
    """The ``paths_sent`` of the agent's tables as the policy declares them."""
    spec = pipeline.policy.agents[agent].aggregate
    assert spec is not None
    return {f"{t}.{d}" for t, ts in spec.tables.items() for d in ts.dimensions} | {
        f"{t}.{m}" for t, ts in spec.tables.items() for m in ts.measures
    }


def check_aggregated(
    rec: DecisionRecord, pipeline: Pipeline, policy_version: str
) -> tuple[SentTable | None, list[tuple[str, str]]]:
    """An ``aggregated`` record against the policy: what it says was sent (None when it
    names nothing the policy declares, or is not of the recorded shape) and the findings
    as (kind, what)."""
    out: list[tuple[str, str]] = []
    agent = pipeline.policy.agents.get(rec.agent)
    if agent is None or agent.aggregate is None:
        return None, [
            ("undeclared_aggregate", f"aggregate tables for {rec.agent!r}, not an aggregate agent")
        ]
    spec = agent.aggregate
    sent = parse_reason(rec.agent, rec.reason)
    if sent is None:
        return None, [("conflict", "not of the shape of an aggregated record (its reason)")]
    current = rec.policy_version == policy_version
    if not current:
        # Made under another policy version: its windows, tables and k were that
        # version's, which the auditor does not have. It must still have kept the k it
        # states, and no k below the floor any policy may have.
        k = max(sent.k, K_FLOOR)
        if sent.customers is None or sent.customers < k:
            have = "fewer than k" if sent.customers is None else str(sent.customers)
            out.append(
                (
                    "small_cell",
                    f"window {sent.label} revision {sent.revision}: sent from {have} "
                    f"contributing customers, below k={k} (policy {rec.policy_version})",
                )
            )
    sizes = {int(parse_window(w).total_seconds()) for w in spec.windows}
    if current and (sent.size not in sizes or sent.start % sent.size):
        out.append(
            (
                "undeclared_aggregate",
                f"window {sent.label}: not one of the agent's windows ({', '.join(spec.windows)})",
            )
        )
    wanted = declared_paths(pipeline, rec.agent)
    if current and set(rec.paths_sent) != wanted:
        tables = sorted({p.split(".", 1)[0] for p in set(rec.paths_sent) ^ wanted})
        extra = sorted({p for p in rec.paths_sent if p not in wanted})
        out.append(
            (
                "undeclared_aggregate",
                f"window {sent.label}: its tables are not the policy's (differ in "
                f"{', '.join(tables)}"
                + (f"; undeclared {', '.join(extra[:6])}" if extra else "")
                + ")",
            )
        )
    if current and (sent.customers is None or sent.customers < spec.k):
        have = "fewer than k" if sent.customers is None else str(sent.customers)
        out.append(
            (
                "small_cell",
                f"window {sent.label} revision {sent.revision}: sent from {have} contributing "
                f"customers, below the agent's k={spec.k}",
            )
        )
    if current and sent.k != spec.k:
        out.append(("conflict", f"states k={sent.k}; the policy's k is {spec.k}"))
    window_id = f"{rec.agent}:{_iso(sent.start)}/{sent.size}s"
    event_id = "agg-" + hashlib.sha256(f"{window_id}:{sent.revision}".encode()).hexdigest()[:32]
    shape = {
        "event id": rec.event_id == event_id,
        "event type": rec.event_type == "aggregate.window",
        "time": rec.occurred_at == datetime.fromtimestamp(sent.start + sent.size, UTC),
        "subject": rec.subject_ref == "" and rec.subject_type == "aggregate",
        "topic": rec.topic == agent.topic,
        "digest": bool(rec.payload_digest) and bool(rec.event_fp),
    }
    bad = [k for k, ok in shape.items() if not ok]
    if bad:
        out.append(
            ("conflict", f"window {sent.label}: not what the gateway records ({', '.join(bad)})")
        )
    elif current:
        purposes = list(agent.purposes)
        bases = sorted({p.legal_basis for p in agent.purposes.values()})
        digest = decision_digest(
            "aggregated", rec.reason, sorted(wanted), [], [], purposes, bases, policy_version
        )
        assert rec.event_fp is not None
        if rec.record_id != pipeline.ids.record_id(rec.event_fp, rec.agent, "aggregate", digest):
            out.append(
                (
                    "conflict",
                    f"window {sent.label} revision {sent.revision}: its id is not the one its "
                    "content, reason, tables and purposes give (edited, or not the gateway's)",
                )
            )
    return sent, out


def content_fp(table: AggregateTable) -> str:
    """The content fingerprint :func:`gateway.aggregates.emit` records for ``table``."""
    return hashlib.sha256(orjson.dumps(table.body(), option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class Recomputed:
    """The windows recomputed from the input: per (agent, size, start) the last table (None:
    below k, nothing to send) of every window closed by the input's watermark."""

    closed: dict[tuple[str, int, int], AggregateTable | None] = field(default_factory=dict)
    open: int = 0  # windows not closed yet: not compared
    uncertain: int = 0  # closed, but an order the auditor cannot rule out could change them


@dataclass(frozen=True, slots=True)
class Decided:
    """One admitted event as the recomputation feeds it: where it was read (input
    partitions, and the offset of its first copy), whose, when, and what it contributed
    (per the verified ``contributed`` records)."""

    sources: frozenset[int]
    offset: int
    customer_id: str
    occurred_at: datetime
    contributions: tuple[Contribution, ...]


def decision_order(
    events: Iterable[Decided], partitions: int
) -> tuple[list[tuple[int, Decided]], set[int]]:
    """The events with their subject partition, in an order the gateway may have decided
    them: each subject partition's events in the offset order of the input partition they
    came from (several sources merged by event time, one order among those possible), the
    partitions merged by event time (which only moves intermediate revisions). Also the
    subject partitions fed from more than one input partition (their order is unknown)."""
    by_source: dict[int, dict[int, list[Decided]]] = {}
    for ev in events:
        sp = subject_partition(ev.customer_id, partitions)
        by_source.setdefault(sp, {}).setdefault(min(ev.sources), []).append(ev)
    mixed = {
        sp
        for sp, srcs in by_source.items()
        if len(srcs) > 1 or any(len(e.sources) > 1 for evs in srcs.values() for e in evs)
    }
    lanes: list[list[tuple[int, Decided]]] = []
    for sp, srcs in by_source.items():
        lists = [[(sp, e) for e in sorted(evs, key=lambda e: e.offset)] for evs in srcs.values()]
        lanes.append(list(heapq.merge(*lists, key=lambda x: x[1].occurred_at)))
    return list(heapq.merge(*lanes, key=lambda x: x[1].occurred_at)), mixed


def recompute(pipeline: Pipeline, events: Iterable[Decided], partitions: int) -> Recomputed:
    """Drive an :class:`AggregateSet` over ``events`` (in :func:`decision_order`) as the
    replay does, without closing at the end: only windows the input's own watermark closes
    count, and of those only the ones no possible order could change."""
    agg = AggregateSet(pipeline.policy, partitions)
    ordered, mixed = decision_order(events, partitions)
    last: dict[tuple[str, int, int], AggregateTable] = {}
    latest: dict[int, datetime] = {}  # subject partition -> its latest event time
    for sp, ev in ordered:
        latest[sp] = max(latest.get(sp, ev.occurred_at), ev.occurred_at)
        for t in agg.event(sp, ev.occurred_at, ev.contributions):
            last[(t.agent, t.size, t.start)] = t
    # Per (agent, window size): the earliest window an event of a mixed partition could
    # have reached late (past end + grace by its partition's latest event time).
    uncertain_from: dict[tuple[str, int], int] = {}
    for sp, ev in ordered:
        if sp not in mixed:
            continue
        wm = int(latest[sp].timestamp())
        for c in ev.contributions:
            spec = agg.specs[c.agent]
            grace = int(parse_window(spec.grace).total_seconds())
            for w in spec.windows:
                size, start = window_of(c.occurred_at, parse_window(w))
                if start + size + grace <= wm:
                    key = (c.agent, size)
                    uncertain_from[key] = min(uncertain_from.get(key, start), start)
    out = Recomputed()
    for name, combiner in agg.combiners.items():
        for size, start in combiner.closed:
            if start >= uncertain_from.get((name, size), start + 1):
                out.uncertain += 1
                continue
            out.closed[(name, size, start)] = last.get((name, size, start))
        out.open += len(combiner.latest)
    return out


def compare_final(
    recomputed: Recomputed,
    sent: Mapping[tuple[str, int, int], Sequence[tuple[SentTable, DecisionRecord]]],
) -> list[tuple[str, tuple[str, int, int], DecisionRecord | None, str]]:
    """Each closed window's latest sent revision against the recomputed table. Returns
    (kind, window, the latest record or None, what) per finding: ``aggregate_mismatch``
    for other content (or a table where the input gives none), ``lost`` for no table."""
    out: list[tuple[str, tuple[str, int, int], DecisionRecord | None, str]] = []
    for window in sorted(recomputed.closed):
        want = recomputed.closed[window]
        got = sent.get(window, ())
        label = f"{_iso(window[2])}/{_size_text(window[1])}"
        if not got:
            if want is not None:
                out.append(
                    (
                        "lost",
                        window,
                        None,
                        f"window {label} closed with {want.customers} contributing customers, "
                        "but no table was sent for it",
                    )
                )
            continue
        table, rec = max(got, key=lambda x: x[0].revision)
        if want is None:
            out.append(
                (
                    "aggregate_mismatch",
                    window,
                    rec,
                    f"window {label}: revision {table.revision} sent, but the input gives it "
                    "fewer than k contributing customers (nothing to send)",
                )
            )
            continue
        if rec.event_fp != content_fp(replace(want, revision=table.revision)):
            out.append(
                (
                    "aggregate_mismatch",
                    window,
                    rec,
                    f"window {label}: the last revision sent ({table.revision}, "
                    f"{table.customers} contributing customers) is not the table the input "
                    f"gives ({want.customers} contributing customers, {want.late} late events)",
                )
            )
    return out
