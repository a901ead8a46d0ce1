"""What the audit found: findings by kind, and the report that collects them.

Findings are split into

* **gaps** (failures: a promise broken or not provable; each makes the audit fail):
  ``lost`` -- a processed input event with an output missing (record, agent message,
  erasure request or dead letter); ``overdue`` -- the same, for input not yet committed but
  older than the pending deadline; ``unlogged`` -- an agent message without a record of its
  exact bytes, or one the ledger records as a withholding; ``unledgered`` -- a record the
  ledger sink has consumed but the ledger does not hold; ``forged`` -- a record (or erasure
  request) whose event does not exist on the input; ``bad_mac`` -- a message on the
  disclosure topic without a valid workers' MAC; ``conflict`` -- a record that is not what
  the engine decides for its event under its own consent state, copies of one record that
  disagree, an event decided twice differently, a dead letter its input cannot explain;
  ``impossible_state`` -- a record decided against a consent state the customer could not
  have had then; ``event_id_reused`` -- different events under one event id;
* **pending**: outputs missing for input the worker has not committed yet and younger than
  the deadline (still in flight);
* **warnings**: ``malformed`` (unreadable entries), ``unchecked`` (records written before
  records carried the event fingerprint and consent state: they cannot be re-decided).

Findings name positions, ids, agents and reasons, never personal data.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

GAP_KINDS = (
    "lost",
    "overdue",
    "unlogged",
    "unledgered",
    "forged",
    "bad_mac",
    "conflict",
    "impossible_state",
    "event_id_reused",
)
WARNING_KINDS = ("malformed", "unchecked")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    what: str
    position: str | None = None
    event_id: str | None = None
    record_id: str | None = None
    agent: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("kind", self.kind),
                ("what", self.what),
                ("position", self.position),
                ("event_id", self.event_id),
                ("record_id", self.record_id),
                ("agent", self.agent),
            )
            if v is not None
        }


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
        return {
            **{k: kinds.get(k, 0) for k in (*GAP_KINDS, *WARNING_KINDS)},
            "pending": len(self.pending),
        }

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
