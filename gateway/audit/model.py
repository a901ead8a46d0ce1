"""What the audit reads and what it expects: a message as read back from a topic, the
decision a record states, and what one input message must have caused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    """What one input message must have caused."""

    message: TopicMessage
    digest: str  # sha256 of the raw input: how its dead letter is recognised
    event_id: str | None = None  # None: the input must be dead-lettered
    dead_letter: str | None = None  # the reason, when dead-lettered
    records: dict[str, RecordedDecision] = field(default_factory=dict)
