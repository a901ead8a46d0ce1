"""One event in, everything it causes out: the consent update, one decision per subscribed
agent, the sealed agent messages and their decision records, or a dead letter.

Pure (no Kafka): the stream worker and the offline replay both drive this, so what the
replay writes is exactly what the worker would publish.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.consent import ConsentState, apply_event
from gateway.crypto import Sealer, derive_key, subject_ref
from gateway.engine import Decision, Engine
from gateway.errors import EventError, EventTooLarge
from gateway.events import Event, parse_event, raw_event_id, safe_field_name
from gateway.policy import Policy
from gateway.records import DecisionRecord, Recipient, decision_id, disclosure_id, payload_digest


@dataclass(frozen=True, slots=True)
class AgentMessage:
    agent: str
    topic: str
    # The subject as this agent may know it (its own keyed pseudonym): keeps one subject's
    # messages in order on one partition without putting a raw customer id in Kafka keys.
    key: bytes
    value: bytes
    disclosure_id: str
    kind: str = "disclosure"  # or "erasure_notice"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input, redacted: the reason and the shape of the input, no values."""

    event_id: str
    reason: str
    error: str
    size: int
    digest: str
    received_at: str
    shape: Any = None

    def to_json(self) -> bytes:
        return orjson.dumps({
            "event_id": self.event_id, "reason": self.reason, "error": self.error,
            "size": self.size, "digest": self.digest, "received_at": self.received_at,
            "shape": self.shape,
        })


@dataclass(slots=True)
class Outcome:
    event: Event | None = None
    records: list[DecisionRecord] = field(default_factory=list)
    messages: list[AgentMessage] = field(default_factory=list)
    dead_letter: DeadLetter | None = None


def redacted_shape(obj: Any, depth: int = 0) -> Any:
    """Keys and value types only (e.g. ``{"name": "<str>"}``): enough to debug a rejected
    event, never its values. Depth and width are bounded against hostile input."""
    if depth > 6:
        return "<...>"
    if isinstance(obj, dict):
        out = {}
        for i, (k, v) in enumerate(obj.items()):
            if i >= 50:
                out["<more>"] = f"<{len(obj) - 50} keys>"
                break
            out[safe_field_name(k)] = redacted_shape(v, depth + 1)
        return out
    if isinstance(obj, list):
        return [redacted_shape(obj[0], depth + 1), f"<{len(obj)} items>"] if obj else []
    if obj is None:
        return None
    return f"<{type(obj).__name__}>"


def _now() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    def __init__(self, engine: Engine, sealers: dict[str, Sealer], pseudonym_master: bytes,
                 *, max_event_bytes: int = 256 * 1024, now: Callable[[], datetime] = _now):
        self.engine = engine
        self.policy: Policy = engine.policy
        self.sealers = sealers
        self.master = pseudonym_master
        self.max_event_bytes = max_event_bytes
        self.now = now
        self.policy_version = engine.policy_version
        self.recipients = {
            name: Recipient(name=name, legal_name=a.recipient.legal_name,
                            address=a.recipient.address, role=a.recipient.role,
                            contract=a.recipient.contract)
            for name, a in self.policy.agents.items()
        }
        self._subject_refs: dict[str, str] = {}
        self._message_keys: dict[tuple[str, str], bytes] = {}

    @classmethod
    def pseudonym_keys(cls, policy: Policy, master: bytes) -> dict[str, bytes]:
        return {name: derive_key(master, "pseudonym:" + name) for name in policy.agents}

    def subject_ref(self, customer_id: str) -> str:
        ref = self._subject_refs.get(customer_id)
        if ref is None:
            if len(self._subject_refs) > 100_000:  # bounded: memory stays flat
                self._subject_refs.clear()
            ref = self._subject_refs[customer_id] = subject_ref(self.master, customer_id)
        return ref

    def message_key(self, agent: str, customer_id: str) -> bytes:
        got = self._message_keys.get((agent, customer_id))
        if got is None:
            if len(self._message_keys) > 100_000:  # bounded: memory stays flat
                self._message_keys.clear()
            key = self.engine.pseudonym_keys[agent]
            got = self._message_keys[(agent, customer_id)] = hmac.new(
                key, b"key:" + customer_id.encode(), hashlib.sha256).hexdigest()[:32].encode()
        return got

    def dead_letter(self, raw: bytes, err: EventError) -> DeadLetter:
        shape = None
        if not isinstance(err, EventTooLarge):  # don't even parse a hostile-sized input
            try:
                shape = redacted_shape(orjson.loads(raw))
            except orjson.JSONDecodeError:
                shape = None
        return DeadLetter(
            event_id=err.event_id or raw_event_id(raw), reason=err.reason, error=str(err),
            size=len(raw), digest="sha256:" + hashlib.sha256(raw).hexdigest(),
            received_at=self.now().isoformat(), shape=shape,
        )

    def process(self, raw: bytes, states: MutableMapping[str, ConsentState]) -> Outcome:
        """Process one raw event against (and update) the consent ``states``."""
        try:
            event = parse_event(raw, self.max_event_bytes)
        except EventError as e:
            return Outcome(dead_letter=self.dead_letter(raw, e))
        return self.process_event(event, states)

    def process_event(self, event: Event, states: MutableMapping[str, ConsentState]) -> Outcome:
        before = states.get(event.customer_id) or ConsentState()
        data = event.body.get("data", {})
        state = apply_event(before, event.event_type, event.subject_type,
                            event.body["occurred_at"], data)
        out = Outcome(event=event)
        decisions: list[Decision]
        if event.event_type == "erasure.requested" and not before.erased:
            decisions = self._erasure_notices(event, before)
        else:
            decisions = [
                self.engine.decide(agent, event.event_type, event.body, event.subject_type,
                                   state, event.reference_date)
                for agent in self.engine.subscribers.get(event.event_type, ())
            ]
        got = set()
        dec_id = decision_id(event.event_id, self.policy_version)
        for d in decisions:
            rec, msg = self._emit(event, d, dec_id)
            out.records.append(rec)
            if msg is not None:
                out.messages.append(msg)
                got.add(d.agent)
        if got:
            state = state.with_recipients(got)
        if state != before:
            states[event.customer_id] = state
        return out

    def _erasure_notices(self, event: Event, before: ConsentState) -> list[Decision]:
        notices = []
        for agent in sorted(before.recipients & set(self.policy.agents)):
            payload = {
                "notice": "erasure",
                "event_id": event.event_id,
                "requested_at": event.body["occurred_at"],
                "subject": self.engine.subject_reference_for(agent, event.customer_id,
                                                             event.reference_date),
                "instruction": "Delete all personal data you received about this subject "
                               "from us, and confirm to the controller.",
            }
            notices.append(Decision(agent, "erasure_notice", None, payload,
                                    purposes=["essential.legal_obligation"],
                                    legal_bases=["legal_obligation"],
                                    consent=["erasure_requested"]))
        return notices

    def _emit(self, event: Event, d: Decision,
              dec_id: str) -> tuple[DecisionRecord, AgentMessage | None]:
        agent = self.policy.agents[d.agent]
        kind = "erasure" if d.outcome == "erasure_notice" else "event"
        did = disclosure_id(event.event_id, d.agent, kind)
        key_id = digest = topic = None
        msg = None
        if d.payload is not None:
            body = dict(d.payload)
            body["_gateway"] = {
                "disclosure_id": did,
                "purposes": d.purposes,
                "removed": d.paths_removed,
                "transformed": d.paths_transformed,
                "policy_version": self.policy_version,
            }
            sealed = self.sealers[d.agent].seal(
                orjson.dumps(body), event_id=event.event_id, disclosure_id=did,
                kind="erasure_notice" if kind == "erasure" else "disclosure")
            key_id, digest, topic = sealed.key_id, payload_digest(sealed.message), agent.topic
            msg = AgentMessage(d.agent, agent.topic,
                               self.message_key(d.agent, event.customer_id), sealed.message,
                               did, "erasure_notice" if kind == "erasure" else "disclosure")
        # Built from trusted, already-validated values: skip pydantic validation (hot path).
        rec = DecisionRecord.trusted(
            record_id=did,
            decision_id=dec_id,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            recorded_at=self.now(),
            subject_ref=self.subject_ref(event.customer_id),
            subject_type=event.subject_type,  # type: ignore[arg-type]
            agent=d.agent,
            recipient=self.recipients[d.agent],
            outcome=d.outcome,  # type: ignore[arg-type]
            reason=d.reason,
            purposes=d.purposes, legal_bases=d.legal_bases,
            categories_sent=d.categories_sent, categories_transformed=d.categories_transformed,
            categories_removed=d.categories_removed,
            paths_sent=d.paths_sent, paths_transformed=d.paths_transformed,
            paths_removed=d.paths_removed,
            consent=d.consent,
            policy_version=self.policy_version,
            key_id=key_id, payload_digest=digest, topic=topic,
        )
        return rec, msg
