"""The input as the gateway must have taken it: every message admitted with its headers,
and the admitted events grouped per customer, whatever partition they were read from.

The gateway decides a customer's events on one subject partition, in the order they reach
it there (read directly, or forwarded from the partition they were published on), which is
neither the input's offset order nor ``occurred_at`` order. So the auditor cannot replay
one order and expect exact record ids: it gathers, per customer, everything the input holds
(:class:`History`) and checks each record against it (see :mod:`gateway.audit.states` and
:mod:`gateway.audit.comparison`).
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from gateway.audit.model import Expected, TopicMessage
from gateway.consent import ERASURE, Change, Stamp, change_of, changes_state, stamp_of
from gateway.events import Event
from gateway.pipeline import DeadLetter, Pipeline


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect(pipeline: Pipeline, inputs: Iterable[TopicMessage]) -> list[Expected]:
    """Admit each input as the worker does (size, card numbers, the publisher's signature
    over the exact bytes with the headers read, schema, the publisher's rights): an unsigned
    or forged input is expected as a dead letter, never as a decision. Inputs read without
    headers (``headers`` None) are admitted unverified: only for a source that cannot carry
    them (an operator's file)."""
    out = []
    for m in sorted(inputs, key=lambda m: (m.topic, m.partition, m.offset)):
        exp = Expected(m, sha256(m.value))
        got = pipeline.admit(m.value, m.headers or (), verify=m.headers is not None)
        if isinstance(got, DeadLetter):
            exp.dead_letter = got.reason
        else:
            exp.event = got.event
        out.append(exp)
    return out


@dataclass
class Copy:
    """Where one content (event fingerprint) of a customer's event was published."""

    event: Event
    inputs: list[Expected] = field(default_factory=list)

    @property
    def partitions(self) -> set[int]:
        return {e.message.partition for e in self.inputs}

    def first_offset(self, partition: int) -> int | None:
        got = [e.message.offset for e in self.inputs if e.message.partition == partition]
        return min(got) if got else None


@dataclass
class History:
    """Everything the input holds about one customer: each event content once (with every
    place it was published), the state changes they carry, and the event ids used by more
    than one content."""

    customer_id: str
    events: dict[str, Copy] = field(default_factory=dict)  # event_fp -> copies
    # stamp -> the changes carrying it (two, when an id is reused at the same time)
    changes: dict[Stamp, list[tuple[Change, Copy]]] = field(default_factory=dict)
    # grant key -> the stamps of its revocations (records show granted grants only)
    revocations: dict[str, list[Stamp]] = field(default_factory=dict)

    def add(self, e: Expected) -> None:
        assert e.event is not None
        ev = e.event
        copy = self.events.get(ev.event_fp)
        if copy is None:
            copy = self.events[ev.event_fp] = Copy(ev)
            data = ev.body.get("data", {})
            if changes_state(ev.event_type, data):
                stamp = stamp_of(ev.occurred_at, ev.event_id)
                change = change_of(ev.event_type, ev.subject_type, stamp, data)
                if change is not None:
                    self.changes.setdefault(stamp, []).append((change, copy))
                    for key, granted in change.grants:
                        if not granted:
                            self.revocations.setdefault(key, []).append(stamp)
        copy.inputs.append(e)

    def erasures(self) -> list[Copy]:
        return [c for c in self.events.values() if c.event.event_type == ERASURE]


@dataclass
class Histories:
    """The admitted input per customer, and indexes to find an event by content or id."""

    by_customer: dict[str, History] = field(default_factory=dict)
    by_fp: dict[str, History] = field(default_factory=dict)
    # event id -> the contents (fingerprints) published under it, any customer
    fps_by_id: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, expected: Iterable[Expected]) -> Histories:
        out = cls()
        for e in expected:
            if e.event is None:
                continue
            cid = e.event.customer_id
            hist = out.by_customer.get(cid)
            if hist is None:
                hist = out.by_customer[cid] = History(cid)
            hist.add(e)
            out.by_fp[e.event.event_fp] = hist
            out.fps_by_id[e.event.event_id].add(e.event.event_fp)
        return out

    def copy(self, event_fp: str | None) -> Copy | None:
        hist = self.by_fp.get(event_fp or "")
        return hist.events[event_fp] if hist is not None and event_fp else None

    def reused(self, event_id: str) -> bool:
        return len(self.fps_by_id.get(event_id, ())) > 1

    @functools.cached_property
    def reused_ids(self) -> set[str]:
        """The event ids used by more than one content (computed once the input is read)."""
        return {eid for eid, fps in self.fps_by_id.items() if len(fps) > 1}
