"""Is what the workers wrote what the offline core decides for the same events? Used after
the scale-out run, where partitions moved between workers mid-stream: every record (by
id, decision field for field), every agent message (each with its record, none missing)
and every subject's final consent state (from the changelog)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.consent import ConsentState
from gateway.dev.bench.infra import Deployment
from gateway.erasure import is_erasure_request
from gateway.records import DecisionRecord
from gateway.stream.consent_store import OFFSET_KEY, changelog_topic

Decided = tuple[Any, ...]
_FIELDS = (
    "event_id",
    "agent",
    "outcome",
    "reason",
    "purposes",
    "paths_sent",
    "paths_transformed",
    "paths_removed",
    "categories_sent",
    "consent",
    "subject_ref",
    "topic",
)


def decision_of(r: DecisionRecord) -> Decided:
    """What a record decides (not when it was written, nor the ciphertext digest)."""
    return (
        r.event_id,
        r.agent,
        r.outcome,
        r.reason,
        tuple(r.purposes),
        tuple(r.paths_sent),
        tuple(r.paths_transformed),
        tuple(r.paths_removed),
        tuple(r.categories_sent),
        tuple(r.consent),
        r.subject_ref,
        r.topic,
    )


@dataclass
class Expected:
    records: dict[str, Decided]  # record id -> decision
    messages: dict[str, str]  # disclosure id -> agent
    states: dict[str, dict[str, Any]]  # customer id -> final consent state


def expected(dep: Deployment, values: list[bytes]) -> Expected:
    states: dict[str, ConsentState] = {}
    outs = [dep.core.pipeline.process(v, states, verify=False) for v in values]
    return Expected(
        records={r.record_id: decision_of(r) for out in outs for r in out.records},
        messages={m.disclosure_id: m.agent for out in outs for m in out.messages},
        states={cid: st.to_dict() for cid, st in states.items()},
    )


def verify(dep: Deployment, want: Expected, data: dict[str, list[Any]]) -> dict[str, Any]:
    """``data``: topic -> records read back (disclosure, agent and changelog topics)."""
    recs = [
        DecisionRecord.from_json(m.value)
        for m in data[dep.settings.disclosure_topic]
        if not is_erasure_request(m.headers)
    ]
    seen: set[str] = set()
    unexpected = mismatched = 0
    examples: list[dict[str, Any]] = []
    for r in recs:
        want_r = want.records.get(r.record_id)
        got_r = decision_of(r)
        if want_r is None:
            unexpected += 1
        elif got_r != want_r:
            mismatched += 1
            if len(examples) < 5:
                examples.append(
                    {
                        "record_id": r.record_id,
                        **{
                            f: {"got": g, "want": w}
                            for f, g, w in zip(_FIELDS, got_r, want_r, strict=True)
                            if g != w
                        },
                    }
                )
        seen.add(r.record_id)
    digests = {r.payload_digest for r in recs if r.payload_digest}
    messages = orphans = 0
    delivered: set[str] = set()
    for topic in dep.agent_topics():
        for m in data.get(topic, []):
            messages += 1
            if "sha256:" + hashlib.sha256(m.value).hexdigest() not in digests:
                orphans += 1  # an agent message without its record: log-before-disclose broken
            did = dict(m.headers or ()).get("disclosure_id")
            if did is not None:
                delivered.add(did.decode())
    latest: dict[str, bytes | None] = {}
    markers = 0
    for m in data.get(changelog_topic(dep.settings), []):
        if m.key == OFFSET_KEY.encode():
            markers += 1  # a progress marker, not a subject
            continue
        latest[m.key.decode()] = m.value
    state_mismatch = 0
    for cid, state in want.states.items():
        raw = latest.get(cid)
        got = ConsentState.from_dict(orjson.loads(raw) if raw else None).to_dict()
        if got != state:
            state_mismatch += 1
    result = {
        "records_expected": len(want.records),
        "records_unique": len(seen),
        "records_duplicate": len(recs) - len(seen),
        "records_missing": len(set(want.records) - seen),
        "records_unexpected": unexpected,
        "records_mismatched": mismatched,
        "mismatch_examples": examples,
        "messages": messages,
        "messages_without_record": orphans,
        "messages_missing": len(set(want.messages) - delivered),
        "subjects_checked": len(want.states),
        "consent_mismatched": state_mismatch,
        "changelog_extra_subjects": len(set(latest) - set(want.states)),
        "changelog_progress_markers": markers,
    }
    result["correct"] = not any(
        result[k]
        for k in (
            "records_missing",
            "records_unexpected",
            "records_mismatched",
            "messages_without_record",
            "messages_missing",
            "consent_mismatched",
            "changelog_extra_subjects",
        )
    )
    return result
