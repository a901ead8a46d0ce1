"""The replay: what each input message must have caused.

The auditor replays the input topic, partition by partition in offset order, through the
same offline :class:`~gateway.pipeline.Pipeline` the worker runs (same policy, same consent
rules, one consent table per partition as the worker keeps it). That yields the exact
record ids each event must have caused: record, decision and disclosure ids are
deterministic functions of the event id, agent and kind.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from gateway.audit.model import Expected, RecordedDecision, TopicMessage
from gateway.consent import ConsentState
from gateway.pipeline import Pipeline


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
        result = pipeline.process(m.value, states[(m.topic, m.partition)])
        if result.dead_letter is not None or result.event is None:
            exp.dead_letter = result.dead_letter.reason if result.dead_letter else "?"
        else:
            exp.event_id = result.event.event_id
            exp.records = {r.record_id: RecordedDecision.of(r) for r in result.records}
        out.append(exp)
    return out
