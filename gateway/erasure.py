"""Erasure notices built from the disclosure log.

When a subject asks to be erased, the worker does not notify agents itself: it writes an
:class:`ErasureRequest` to the disclosure topic, after the subject's records (same key, so
same partition, in order). Whoever holds the log up to that point (the ledger sink, the
offline replay, the audit) builds each agent's notice with :func:`erasure_notices` from the
subject's disclosure records: the disclosure ids the agent received, its own reference for
each event and its own pseudonyms of the subject, so that the agent can find and delete
exactly what it holds about the subject, and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gateway.records import DecisionRecord

# On the disclosure topic, an erasure request is told apart from the decision records by
# this header (a record has none).
HEADER_KIND: Final = "gateway-kind"
ERASURE_REQUEST_KIND: Final = b"erasure_request"


def is_erasure_request(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Do a disclosure-topic message's headers mark it as an erasure request?"""
    return any(k == HEADER_KIND and v == ERASURE_REQUEST_KIND for k, v in headers or ())


NOTICE_INSTRUCTION: Final = (
    "Delete all personal data you received about this subject from us (every disclosure "
    "listed here and anything else stored under these subject references), and confirm to "
    "the controller."
)

# (agent, event_fp) -> the agent's reference for that event.
RefFor = Callable[[str, str], str]


class ErasureRequest(BaseModel):
    """The control message for a subject's first erasure request: who the subject is in the
    log (a subject ref per pseudonym period) and to each agent (its subject pseudonyms, per
    period), and which event asked. Holds no raw identifier."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["erasure_request"] = "erasure_request"
    v: Literal[1] = 1
    event_id: str
    event_fp: str
    requested_at: str  # the request's occurred_at, UTC ISO 8601
    subject_type: Literal["consumer", "business"]
    # Current period first.
    subject_refs: list[str] = Field(min_length=1)
    agent_subjects: dict[str, list[str]]
    policy_version: str

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> ErasureRequest:
        return cls.model_validate(orjson.loads(data))


def erasure_notices(
    request: ErasureRequest,
    records: Iterable[DecisionRecord],
    ref_for: RefFor,
    agents: Iterable[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Each agent's notice, as ``(agent, payload)`` sorted by agent, for every agent that
    received something about the subject: records of the subject (any of its subject refs)
    with outcome ``disclosed``. ``ref_for`` gives an agent's reference for an event; only
    ``agents`` (default: any) are notified."""
    refs = set(request.subject_refs)
    allowed = None if agents is None else set(agents)
    per_agent: dict[str, dict[str, DecisionRecord]] = defaultdict(dict)
    for r in records:
        if r.subject_ref not in refs or r.outcome != "disclosed":
            continue
        if allowed is not None and r.agent not in allowed:
            continue
        per_agent[r.agent].setdefault(r.record_id, r)
    out = []
    for agent in sorted(per_agent):
        got = sorted(per_agent[agent].values(), key=lambda r: (r.occurred_at, r.record_id))
        disclosures = []
        for r in got:
            item: dict[str, Any] = {"disclosure_id": r.record_id}
            if r.event_fp:  # records from before event fingerprints name no reference
                item["ref"] = ref_for(agent, r.event_fp)
            disclosures.append(item)
        out.append(
            (
                agent,
                {
                    "notice": "erasure",
                    "ref": ref_for(agent, request.event_fp),
                    "requested_at": request.requested_at,
                    "subjects": list(request.agent_subjects.get(agent, [])),
                    "disclosures": disclosures,
                    "instruction": NOTICE_INSTRUCTION,
                },
            )
        )
    return out
