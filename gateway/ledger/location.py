"""One record and where it sits in the log: ``gateway log show`` and the review page's
record page show the same facts, built here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.ledger import render
from gateway.ledger.store import LedgerStore
from gateway.records import DecisionRecord


@dataclass(frozen=True)
class RecordInLog:
    record_id: str
    record: DecisionRecord | None  # None: retention removed the body, the hash stays
    # shard, index (position in the shard), leaf_hash, the checkpoint covering it (None
    # until one is signed) and, for a pruned record, which prune removed the body.
    location: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        if self.record is None:
            return {"record_id": self.record_id, **self.location}
        return {"record": self.record.model_dump(mode="json"), **self.location}

    def document(self) -> render.Document:
        if self.record is None:
            return render.Document(
                f"Record {self.record_id} (pruned)",
                [(k, render.text(v)) for k, v in self.location.items()],
            )
        return render.record_document(self.record, self.location)


def locate_record(store: LedgerStore, record_id: str) -> RecordInLog | None:
    """The record ``record_id`` and its place in the log, or None if the log has no such
    record."""
    stored = store.get(record_id)
    if stored is None:
        return None
    cp = store.covering_checkpoint(stored.shard, stored.seq)
    location: dict[str, Any] = {
        "shard": stored.shard,
        "index": stored.seq,
        "leaf_hash": stored.leaf_hash.hex(),
        "checkpoint": f"size {cp.tree_size} at {cp.timestamp}" if cp else None,
    }
    record = stored.record
    if record is None:
        location["pruned"] = f"body removed by retention (prune #{stored.pruned_by})"
    return RecordInLog(record_id, record, location)
