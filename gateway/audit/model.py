"""What the audit reads and what it expects: a message as read back from a topic, the
decision a record states, and one input message as admitted (or rejected)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.events import Event
from gateway.records import DecisionRecord

# Outcomes under which an agent receives a message.
DISCLOSING = frozenset({"disclosed", "erasure_notice"})

# A consumer group's committed offsets: (topic, partition) -> the next offset it would read.
Offsets = Mapping[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """One message as read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    # None: not read (a source without headers); the MAC checks then cannot run.
    headers: tuple[tuple[str, bytes], ...] | None = None
    # The broker's timestamp (ms since the epoch; -1 unknown): how old unfinished work is.
    timestamp_ms: int = -1

    @property
    def position(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@dataclass(frozen=True, slots=True)
class RecordedDecision:
    """The part of a record that says what was decided (not when, nor the sealed bytes):
    two copies of a record agree when their recorded decisions are equal."""

    agent: str
    outcome: str
    paths_sent: tuple[str, ...]
    paths_transformed: tuple[str, ...]

    @classmethod
    def of(cls, rec: DecisionRecord) -> RecordedDecision:
        return cls(
            rec.agent,
            rec.outcome,
            tuple(sorted(rec.paths_sent)),
            tuple(sorted(rec.paths_transformed)),
        )

    @property
    def discloses(self) -> bool:
        return self.outcome in DISCLOSING


@dataclass(slots=True)
class Expected:
    """One input message as the gateway must have taken it: admitted (``event`` set: its
    publisher's signature, schema and rights check out, so it must be decided or
    dead-lettered for a reason its subject's state explains) or rejected at admission
    (``dead_letter`` names the reason its dead letter must carry)."""

    message: TopicMessage
    digest: str  # sha256 of the raw input: how its dead letter is recognised
    event: Event | None = None
    dead_letter: str | None = None  # the admission's reason, when rejected

    @property
    def event_id(self) -> str | None:
        return self.event.event_id if self.event is not None else None
