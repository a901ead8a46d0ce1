"""Offline replay: a file of events through the same core the stream worker runs.

Writes, under the output directory::

    topics/<agent topic>.jsonl   the sealed messages, one per line, exactly as on the topic
    records.jsonl                every decision record (disclosed / withheld / erasure notice)
    deadletter.jsonl             rejected lines, as the worker dead-letters them (invalid
                                 input, an event the subject's state makes inapplicable, or
                                 a failure of the core): line number, reason, redacted error
    summary.json                 counts per agent and outcome
    aggregates.jsonl             each aggregate table emitted to an aggregate-only agent,
                                 in the clear (also sealed on the agent's topic file): the
                                 operator's own view of what left

An aggregate-only agent (``kind: aggregate``) gets no message per event: each event it
subscribes to contributes to its windows (record outcome ``contributed``), routed to its
subject partition of ``partitions`` as the stream routes it; a window is emitted when
every partition's latest event time passed its end (again, revision + 1, when a late
event within grace changes it), and every window is closed at the end of the input.

The subjects' states are built from the file's events, in file order. A file is trusted as
a whole by the operator who replays it: publisher signatures (Kafka record headers) are not
on a file, so they are not checked. Duplicates and reused event ids are recognised among
the last million events. A subject's first erasure request is answered as the ledger sink
answers it: each agent that received data about the subject gets a notice built from the
records the replay made so far.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from gateway.aggregates import AggregateSet, AggregateTable, emit
from gateway.consent import ConsentState
from gateway.pipeline import DuplicateCache, EventResult, Pipeline
from gateway.records import DecisionRecord
from gateway.routing import subject_partition


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    dead_letters: int = 0
    messages: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    records: list[DecisionRecord] = field(default_factory=list)
    aggregates: list[AggregateTable] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "lines": self.lines,
            "events": self.events,
            "dead_letters": self.dead_letters,
            "aggregates": len(self.aggregates),
            "messages_per_agent": dict(self.messages),
            "outcomes": [
                {"agent": a, "outcome": o, "count": n}
                for (a, o), n in sorted(self.outcomes.items())
            ],
        }


def iter_lines(fh: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for n, line in enumerate(fh, start=1):
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield n, line


def replay(
    pipeline: Pipeline, events: Path, out_dir: Path, *, partitions: int = 1
) -> ReplaySummary:
    out_dir.mkdir(parents=True, exist_ok=True)
    topics_dir = out_dir / "topics"
    topics_dir.mkdir(exist_ok=True)
    summary = ReplaySummary()
    states: dict[str, ConsentState] = {}
    seen = DuplicateCache(size=1_000_000)
    by_subject: dict[str, list[DecisionRecord]] = {}
    handles: dict[str, BinaryIO] = {}
    aggregates = AggregateSet(pipeline.policy, partitions)
    # Every agent's topic file, even if nothing reaches it (an aggregate agent whose
    # windows all stayed below the threshold): `agent read` then reads an empty topic.
    for agent in pipeline.policy.agents.values():
        handles[agent.topic] = (topics_dir / f"{agent.topic}.jsonl").open("wb")

    def write(out: EventResult) -> None:
        for rec in out.records:
            recs.write(rec.to_json() + b"\n")
            summary.outcomes[(rec.agent, rec.outcome)] += 1
            summary.records.append(rec)
            by_subject.setdefault(rec.subject_ref, []).append(rec)
        for msg in out.messages:
            fh = handles.get(msg.topic)
            if fh is None:
                fh = handles[msg.topic] = (topics_dir / f"{msg.topic}.jsonl").open("wb")
            fh.write(msg.value + b"\n")
            summary.messages[msg.agent] += 1

    def emit_tables(tables: list[AggregateTable]) -> None:
        for table in tables:
            rec, msg = emit(pipeline, table)
            summary.aggregates.append(table)
            clear.write(orjson.dumps(table.body()) + b"\n")
            write(EventResult(records=[rec], messages=[msg]))

    try:
        with (
            events.open("rb") as src,
            (out_dir / "records.jsonl").open("wb") as recs,
            (out_dir / "deadletter.jsonl").open("wb") as dead,
            (out_dir / "aggregates.jsonl").open("wb") as clear,
        ):
            for lineno, raw in iter_lines(src):
                summary.lines += 1
                out = pipeline.process(raw, states, verify=False, seen=seen)
                if out.dead_letter is not None:
                    summary.dead_letters += 1
                    dead.write(
                        orjson.dumps({"line": lineno, **orjson.loads(out.dead_letter.to_json())})
                        + b"\n"
                    )
                    continue
                summary.events += 1
                write(out)
                request = out.erasure_request
                if request is not None:
                    held = [r for ref in request.subject_refs for r in by_subject.get(ref, ())]
                    write(pipeline.erasure_outputs(request, held))
                if out.event is not None and aggregates.combiners:
                    part = subject_partition(out.event.customer_id, partitions)
                    emit_tables(aggregates.event(part, out.event.occurred_at, out.contributions))
            emit_tables(aggregates.close())
    finally:
        for fh in handles.values():
            fh.close()
    (out_dir / "summary.json").write_bytes(
        orjson.dumps(summary.to_json(), option=orjson.OPT_INDENT_2)
    )
    return summary
