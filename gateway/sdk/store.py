"""The agent side of erasure: keep what the gateway sent, and delete a subject's data when an
erasure notice says so.

Every message an agent receives names the subject as the agent knows it (``_gateway.subject``,
also the message's Kafka key: the agent's own pseudonym of the subject) and carries its
disclosure id and the agent's own reference for the event (``_gateway.ref``). An erasure
notice lists the subject's pseudonyms and every disclosure the agent received about the
subject, so a store indexed by both deletes exactly that subject's data and nothing else.

A real agent keeps its data in its own database; this store shows the indexing it needs,
and is what the tests use to check notices from the agent's side.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.sdk.reader import Received


@dataclass
class Erased:
    """What one notice removed: the disclosure ids deleted, and the disclosure ids the
    notice listed that the store did not hold (never received, or already deleted)."""

    deleted: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


class AgentStore:
    """What one agent received, by disclosure id and by subject pseudonym."""

    def __init__(self) -> None:
        self._items: dict[str, Received] = {}
        self._by_subject: dict[str, set[str]] = {}
        self.notices: list[Received] = []

    def add(self, item: Received) -> None:
        """Keep a disclosure; an erasure notice is applied instead."""
        if item.kind == "erasure_notice":
            self.apply_erasure(item)
            return
        self._items[item.disclosure_id] = item
        subject = _subject_of(item.payload)
        if subject is not None:
            self._by_subject.setdefault(subject, set()).add(item.disclosure_id)

    def apply_erasure(self, notice: Received | dict[str, Any]) -> Erased:
        """Delete everything the notice names: each disclosure it lists, and anything else
        held under the subject's pseudonyms it lists."""
        payload = notice.payload if isinstance(notice, Received) else notice
        if payload.get("notice") != "erasure":
            raise ValueError("not an erasure notice")
        if isinstance(notice, Received):
            self.notices.append(notice)
        listed = [d["disclosure_id"] for d in payload.get("disclosures", ())]
        doomed = set(listed)
        for subject in payload.get("subjects", ()):
            doomed |= self._by_subject.pop(subject, set())
        out = Erased()
        for did in sorted(doomed):
            item = self._items.pop(did, None)
            if item is None:
                out.unknown.append(did)
                continue
            out.deleted.append(did)
            subject = _subject_of(item.payload)
            if subject is not None and subject in self._by_subject:
                self._by_subject[subject].discard(did)
                if not self._by_subject[subject]:
                    del self._by_subject[subject]
        return out

    def subjects(self) -> list[str]:
        return sorted(self._by_subject)

    def about(self, subject: str) -> list[Received]:
        """Everything held about one subject (by the agent's pseudonym of it)."""
        return [self._items[d] for d in sorted(self._by_subject.get(subject, ()))]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Received]:
        return iter(list(self._items.values()))

    def __contains__(self, disclosure_id: object) -> bool:
        return disclosure_id in self._items


def _subject_of(payload: Any) -> str | None:
    meta = payload.get("_gateway") if isinstance(payload, dict) else None
    subject = meta.get("subject") if isinstance(meta, dict) else None
    return subject if isinstance(subject, str) else None
