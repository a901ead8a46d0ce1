"""One event in, everything it causes out: the subject's state update, one decision per
subscribed agent, the sealed agent messages and their decision records (or, for a subject's
first erasure request, the :class:`~gateway.erasure.ErasureRequest` the notices are built
from), or a dead letter.

Pure (no Kafka): the stream worker, the offline replay and the audit all drive this one
class, so what the replay writes is exactly what the worker would publish, and the audit
expects exactly what the worker does.

Two steps, which a caller may run apart (the worker routes an event to its subject's
partition between them):

* :meth:`Pipeline.admit` takes the raw record: size, card numbers, the publisher's
  signature, the schema, and whether the publisher may send that event type;
* :meth:`Pipeline.decide` takes an admitted event and the subjects' states: duplicates and
  reused ids, the declared subject type against the known one, the state change
  (superseded, or not applicable to an erased subject), the decisions.

:meth:`Pipeline.process` is both. None of them raises: a rejected input, an event the state
makes inapplicable and an unexpected exception (a bug: ``internal_error``) all give a dead
letter and nothing else: no records, no messages, and the states untouched, so an event
can be sent again once fixed and then has its whole effect.

An event is decided against its subject's state at the moment it is decided. A late event
(older than a state change already applied) is decided under the restrictions now in force;
after an erasure nothing flows to anyone, whatever the event's time. A state change older
than what it would override is dead-lettered ``superseded`` (see :mod:`gateway.consent`).

Duplicates: whoever keeps a subject partition's states keeps a :class:`DuplicateCache` for it
beside them (same lifetime: dropped when the partition's states are) and passes it to
:meth:`Pipeline.decide`. An event id seen with the same content is a duplicate (no output);
with other content it is dead-lettered ``event_id_reused``. Record ids are content-addressed
(:class:`~gateway.records.RecordIds`), so where no cache reaches, a redelivery decided the
same way still gets the same ids, and a different event under a reused id its own.

``verify=False`` skips the publisher check. Only for input an operator vouches for (the
offline ``gateway replay`` of a file): its signatures are not on the file.
"""

from __future__ import annotations

import hashlib
import logging
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.aggregates import Contribution
from gateway.consent import (
    ERASURE,
    STATE_EVENTS,
    ConsentState,
    apply_change,
    change_of,
    changes_state,
    stamp_of,
)
from gateway.crypto import Sealer, derive_key, hmac_sha256, subject_ref
from gateway.engine import NOTICE_LEGAL_BASIS, NOTICE_PURPOSE, Decision, Engine
from gateway.erasure import ErasureRequest, erasure_notices
from gateway.errors import (
    EventError,
    EventIdReused,
    EventTooLarge,
    InternalError,
    PublisherError,
    StateConflict,
    SubjectErased,
    SubjectTypeMismatch,
    Superseded,
)
from gateway.events import (
    _EVENT_ID,
    Event,
    parse_event,
    raw_event_id,
    safe_field_name,
)
from gateway.policy import Policy, TimestampPrecision
from gateway.publishers import Headers, Publisher, PublisherRegistry
from gateway.records import DecisionRecord, Recipient, RecordIds, decision_digest, payload_digest

log = logging.getLogger(__name__)

# What a publisher signature check found: the signer, or the error that refuses the event.
SignatureCheck = Publisher | PublisherError


@dataclass(frozen=True, slots=True)
class AgentMessage:
    agent: str
    topic: str
    # The subject as this agent knows it (its own keyed pseudonym): keeps one subject's
    # messages in order on one partition without putting a raw customer id in Kafka keys.
    key: bytes
    value: bytes
    disclosure_id: str
    kind: str = "disclosure"  # or "erasure_notice"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input, redacted: the reason and the shape of the input, no values.
    ``position`` is where the input was read (``{"topic", "partition", "offset"}``), when a
    stream knows it."""

    event_id: str
    reason: str
    error: str
    size: int
    digest: str
    received_at: str
    shape: Any = None
    position: dict[str, Any] | None = None

    def at(self, topic: str, partition: int, offset: int) -> DeadLetter:
        """This dead letter with the input's position."""
        return replace(self, position={"topic": topic, "partition": partition, "offset": offset})

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "event_id": self.event_id,
            "reason": self.reason,
            "error": self.error,
            "size": self.size,
            "digest": self.digest,
            "received_at": self.received_at,
            "shape": self.shape,
        }
        if self.position is not None:
            doc["position"] = self.position
        return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class Admitted:
    """An event that passed :meth:`Pipeline.admit`: its exact bytes, the parsed event, and
    the publisher that signed it (None when the input was not verified)."""

    value: bytes
    event: Event
    publisher: str | None


@dataclass(slots=True)
class EventResult:
    """Everything one input event caused: its decision records and agent messages (or, for
    a subject's first erasure request, the erasure request to log), or (and then nothing
    else) its dead letter. ``duplicate``: the event was decided before (same id, same
    content); it causes nothing again."""

    event: Event | None = None
    records: list[DecisionRecord] = field(default_factory=list)
    messages: list[AgentMessage] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    duplicate: bool = False
    erasure_request: ErasureRequest | None = None
    # What the event adds to aggregate-only agents' windows (see gateway.aggregates): the
    # caller hands them to the subject partition's Aggregator of each agent.
    contributions: list[Contribution] = field(default_factory=list)


# How many event ids one worker keeps for duplicate checks, over all the subject
# partitions it holds (each partition's cache gets its share; see ``per_partition``): a
# worker's memory must level off early, whatever the number of partitions (measured: four
# caches of 100,000 each grew a worker from 281 to 499 MiB between 100,000 and 1,000,000
# events).
DUPLICATES_PER_WORKER = 100_000


class DuplicateCache:
    """The ids of events recently decided on one subject partition, with their content
    fingerprints (bounded: least recently seen first out). Kept by whoever keeps that
    partition's states, for as long as it keeps them.

    A fingerprint is kept as its first 128 bits (16 bytes, not 64 hex characters): enough to
    tell a redelivery from another event under the same id, at a third of the memory."""

    def __init__(self, size: int = DUPLICATES_PER_WORKER):
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._seen: OrderedDict[str, bytes] = OrderedDict()

    @staticmethod
    def per_partition(partitions: int) -> int:
        """Each partition's share of :data:`DUPLICATES_PER_WORKER` when a worker may hold
        all ``partitions`` (never below 10,000: a few minutes of a busy partition)."""
        return max(10_000, DUPLICATES_PER_WORKER // max(1, partitions))

    @staticmethod
    def _short(event_fp: str) -> bytes:
        return bytes.fromhex(event_fp[:32])

    def get(self, event_id: str) -> str | None:
        """The fingerprint (its first 32 hex digits) last seen with ``event_id``."""
        fp = self._seen.get(event_id)
        if fp is None:
            return None
        self._seen.move_to_end(event_id)
        return fp.hex()

    def same(self, known: str, event_fp: str) -> bool:
        """Is ``known`` (from :meth:`get`) the fingerprint ``event_fp``?"""
        return known == event_fp[:32]

    def add(self, event_id: str, event_fp: str) -> None:
        self._seen[event_id] = self._short(event_fp)
        self._seen.move_to_end(event_id)
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def clear(self) -> None:
        self._seen.clear()

    def __len__(self) -> int:
        return len(self._seen)


# How much of "YYYY-MM-DDTHH:MM:SS" each precision keeps, and what fills the rest.
_CUTS: dict[str, tuple[int, str]] = {
    "day": (10, "T00:00:00Z"),
    "hour": (13, ":00:00Z"),
    "minute": (16, ":00Z"),
    "second": (19, "Z"),
}


def cut_time(value: datetime, precision: TimestampPrecision) -> str:
    """``value`` (UTC) as an agent may know it: cut to the day, hour, minute or second."""
    if value.tzinfo is UTC and value.year >= 1000:
        # Every event time is UTC already (the schemas normalise it): cut its ISO text,
        # which is what the general path below gives, without three datetime copies.
        keep, rest = _CUTS[precision]
        return value.isoformat()[:keep] + rest
    value = value.astimezone(UTC).replace(tzinfo=None, microsecond=0)
    if precision == "day":
        value = value.replace(hour=0, minute=0, second=0)
    elif precision == "hour":
        value = value.replace(minute=0, second=0)
    elif precision == "minute":
        value = value.replace(second=0)
    return value.isoformat(timespec="seconds") + "Z"


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


def _claimed_id(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    candidate = obj.get("event_id") if isinstance(obj, dict) else None
    return candidate if isinstance(candidate, str) and _EVENT_ID.match(candidate) else None


def _now() -> datetime:
    return datetime.now(UTC)


class Pipeline:
    def __init__(
        self,
        engine: Engine,
        sealers: dict[str, Sealer],
        pseudonym_master: bytes,
        *,
        worker_key: bytes,
        publishers: PublisherRegistry | None = None,
        max_event_bytes: int = 256 * 1024,
        now: Callable[[], datetime] = _now,
    ):
        self.engine = engine
        self.policy: Policy = engine.policy
        self.sealers = sealers
        self.master = pseudonym_master
        # No registry: no publisher is declared, so every verified event is refused.
        self.publishers = publishers if publishers is not None else PublisherRegistry()
        self.ids = RecordIds(worker_key)
        self.max_event_bytes = max_event_bytes
        self.now = now
        self.policy_version = engine.policy_version
        self.recipients = {
            name: Recipient(
                name=name,
                legal_name=a.recipient.legal_name,
                address=a.recipient.address,
                role=a.recipient.role,
                contract=a.recipient.contract,
            )
            for name, a in self.policy.agents.items()
        }
        self._subject_refs: dict[str, str] = {}
        self._message_keys: dict[tuple[str, str], bytes] = {}
        self._aggregate_subjects: dict[tuple[str, str], str] = {}
        # What a decision decided recurs: a few hundred (outcome, paths, purposes) shapes
        # cover a whole stream, so each one's digest is computed once (bounded).
        self._decision_digests: dict[tuple[Any, ...], str] = {}
        # Whether the engine can be told that the subject type is only declared, not known.

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
        """The agent's pseudonym of the subject: its messages' Kafka key, and ``subject``
        in their ``_gateway`` block."""
        got = self._message_keys.get((agent, customer_id))
        if got is None:
            if len(self._message_keys) > 100_000:  # bounded: memory stays flat
                self._message_keys.clear()
            key = self.engine.pseudonym_keys[agent]
            got = self._message_keys[(agent, customer_id)] = (
                hmac_sha256(key).hexdigest(b"key:" + customer_id.encode())[:32].encode()
            )
        return got

    def aggregate_subject(self, agent: str, customer_id: str) -> str:
        """The key an aggregate agent's windows count the subject's distinct contributions
        by: keyed, kept inside the gateway (partials), never emitted."""
        got = self._aggregate_subjects.get((agent, customer_id))
        if got is None:
            if len(self._aggregate_subjects) > 100_000:  # bounded: memory stays flat
                self._aggregate_subjects.clear()
            key = self.engine.pseudonym_keys[agent]
            got = self._aggregate_subjects[(agent, customer_id)] = hmac_sha256(key).hexdigest(
                b"aggregate:" + customer_id.encode()
            )[:32]
        return got

    def decision_digest(self, d: Decision) -> str:
        """:func:`~gateway.records.decision_digest` of ``d`` under this policy version."""
        key = (
            d.outcome,
            d.reason,
            tuple(d.paths_sent),
            tuple(d.paths_transformed),
            tuple(d.paths_removed),
            tuple(d.purposes),
            tuple(d.legal_bases),
        )
        got = self._decision_digests.get(key)
        if got is None:
            if len(self._decision_digests) > 10_000:  # bounded: memory stays flat
                self._decision_digests.clear()
            got = self._decision_digests[key] = decision_digest(*key, self.policy_version)
        return got

    def agent_ref(self, agent: str, event_fp: str) -> str:
        """The agent's own reference for an event (24 hex characters): keyed with the
        agent's pseudonym key, so no two agents' references for one event are related."""
        key = self.engine.pseudonym_keys[agent]
        return hmac_sha256(key).hexdigest(b"ref:" + event_fp.encode())[:24]

    def dead_letter(self, raw: bytes, err: EventError) -> DeadLetter:
        shape = None
        if not isinstance(err, EventTooLarge):  # don't even parse a hostile-sized input
            try:
                shape = redacted_shape(orjson.loads(raw))
            except orjson.JSONDecodeError:
                shape = None
        return DeadLetter(
            event_id=err.event_id or raw_event_id(raw),
            reason=err.reason,
            error=str(err),
            size=len(raw),
            digest="sha256:" + hashlib.sha256(raw).hexdigest(),
            received_at=self.now().isoformat(),
            shape=shape,
        )

    # --- the two steps ---------------------------------------------------------------------

    def check_signature(self, value: bytes, headers: Headers | None) -> SignatureCheck | None:
        """The publisher that signed ``value``, or why none did: the signature part of
        :meth:`admit`, which a caller may run ahead (on other threads: the public-key work
        does not hold the interpreter) and hand to :meth:`admit` as ``signer``. None for a
        value :meth:`admit` refuses before any signature check (too large), or where
        checking failed unexpectedly (:meth:`admit` then checks, and says why)."""
        if len(value) > self.max_event_bytes:
            return None
        try:
            return self.publishers.verify(value, headers)
        except PublisherError as e:
            return e
        except Exception:
            return None

    def admit(
        self,
        value: bytes,
        headers: Headers | None = None,
        *,
        verify: bool = True,
        signer: SignatureCheck | None = None,
    ) -> Admitted | DeadLetter:
        """The event in ``value`` if it may be decided: not too large, no card number, signed
        by a declared publisher (unless not ``verify``), schema-valid, of a type the
        publisher may send. Else its dead letter. Never raises. ``signer``: what
        :meth:`check_signature` said of the same value and headers (None: check here)."""
        try:
            if len(value) > self.max_event_bytes:
                raise EventTooLarge(
                    f"event is {len(value)} bytes, the limit is {self.max_event_bytes}"
                    " (GATEWAY_MAX_EVENT_BYTES)"
                )
            # (parse_event scans for card numbers before anything else reads the event.)
            publisher: Publisher | None = None
            if verify:
                if signer is None:
                    signer = self.publishers.verify(value, headers)
                if isinstance(signer, PublisherError):
                    raise signer
                publisher = signer
            event = parse_event(value, self.max_event_bytes)
            if publisher is not None:
                try:
                    self.publishers.authorise(publisher, event.event_type)
                except EventError as e:
                    e.event_id = event.event_id
                    raise
        except EventError as e:
            if isinstance(e, PublisherError) and e.event_id is None:
                # Refused before parsing: name the event by the id it claims, so that its
                # publisher can find it (only an id of the envelope's own shape is echoed).
                e.event_id = _claimed_id(value)
            return self.dead_letter(value, e)
        except Exception as e:
            dead = self._crashed(value, e, None).dead_letter
            assert dead is not None
            return dead
        return Admitted(value, event, publisher.name if publisher is not None else None)

    def decide(
        self,
        admitted: Admitted,
        states: MutableMapping[str, ConsentState],
        *,
        seen: DuplicateCache | None = None,
    ) -> EventResult:
        """Everything an admitted event causes, updating its subject's state in ``states``
        (keyed by customer id) to match. ``seen`` recognises duplicates and reused ids
        among the events decided before on the same subject partition (None: no such
        check). Never raises; a dead letter leaves ``states`` and ``seen`` as they were
        (``seen`` does learn the id of an event the state made inapplicable)."""
        event = admitted.event
        try:
            out = self._decide(event, states, seen)
        except StateConflict as e:
            if seen is not None and not isinstance(e, EventIdReused):
                seen.add(event.event_id, event.event_fp)
            return EventResult(dead_letter=self.dead_letter(admitted.value, e))
        except Exception as e:
            return self._crashed(admitted.value, e, event.event_id)
        if seen is not None and not out.duplicate:
            seen.add(event.event_id, event.event_fp)
        return out

    def process(
        self,
        value: bytes,
        states: MutableMapping[str, ConsentState],
        headers: Headers | None = None,
        *,
        verify: bool = True,
        seen: DuplicateCache | None = None,
    ) -> EventResult:
        """:meth:`admit` then :meth:`decide`. Never raises an ``Exception``: a rejected
        input is dead-lettered with its reason, and an unexpected exception with reason
        ``internal_error`` (logged with its traceback, the dead letter naming only the
        exception type). Either way ``states`` are left as they were."""
        got = self.admit(value, headers, verify=verify)
        if isinstance(got, DeadLetter):
            return EventResult(dead_letter=got)
        return self.decide(got, states, seen=seen)

    def _crashed(self, raw: bytes, exc: Exception, event_id: str | None) -> EventResult:
        """A bug must neither stop the stream nor pass the event silently: log it with its
        traceback and dead-letter the event, naming the exception's type only."""
        # The traceback's frames, not the exception's message: a message may quote the event
        # (a KeyError names the missing key, a ValueError the bad value), and logs hold no PI.
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error(
            "internal error processing event %s (dead-lettered): %s\n%s",
            event_id or raw_event_id(raw),
            type(exc).__name__,
            frames,
        )
        err = InternalError(f"internal error: {type(exc).__name__}", event_id=event_id)
        return EventResult(dead_letter=self.dead_letter(raw, err))

    def _decide(
        self,
        event: Event,
        states: MutableMapping[str, ConsentState],
        seen: DuplicateCache | None,
    ) -> EventResult:
        etype = event.event_type
        if seen is not None:
            known = seen.get(event.event_id)
            if known is not None and seen.same(known, event.event_fp):
                return EventResult(event=event, duplicate=True)
            if known is not None:
                raise EventIdReused(
                    f"event id already used by an event with other content (fingerprint "
                    f"{known[:12]}…, this one {event.event_fp[:12]}…); give every event its "
                    "own id",
                    event_id=event.event_id,
                    event_type=etype,
                )
        before = states.get(event.customer_id) or ConsentState()
        if (
            etype not in STATE_EVENTS
            and before.subject_type is not None
            and event.subject_type != before.subject_type
        ):
            # A state change's declared type claims nothing it acts on: only events that
            # are decided for agents are held to the subject's type.
            raise SubjectTypeMismatch(
                f"the event declares subject type {event.subject_type}, the subject is a "
                f"{before.subject_type}; a subject's type changes only through "
                "customer.type_changed",
                event_id=event.event_id,
                event_type=etype,
            )
        data = event.body.get("data", {})
        if not changes_state(etype, data):
            state = before
            out = EventResult(event=event)
            self._decisions(event, state, out)
            return out
        stamp = stamp_of(event.occurred_at, event.event_id)
        applied = apply_change(before, change_of(etype, event.subject_type, stamp, data))
        if etype in STATE_EVENTS and etype != ERASURE:
            if applied.status == "erased":
                raise SubjectErased(
                    "the subject asked to be erased: erasure is final, no later change applies",
                    event_id=event.event_id,
                    event_type=etype,
                )
            if applied.status == "superseded":
                raise Superseded(
                    "not applied: every field this change sets was set by a later event "
                    "(by occurred_at, then event id)",
                    event_id=event.event_id,
                    event_type=etype,
                )
            if applied.status == "already":
                # This very change is in the state already (a redelivery the cache no
                # longer remembers): it causes nothing again.
                return EventResult(event=event, duplicate=True)
        state = applied.state
        out = EventResult(event=event)
        if etype == ERASURE:
            if not before.erased:
                out.erasure_request = self.erasure_request(event, before)
        else:
            self._decisions(event, state, out)
        # The one write, after everything that can fail: an exception above leaves the
        # subject's state as it was (the event then has no effect at all).
        if state != before:
            states[event.customer_id] = state
        return out

    def _decisions(self, event: Event, state: ConsentState, out: EventResult) -> None:
        agents = self.engine.subscribers.get(event.event_type, ())
        if not agents:
            return
        verified = state.subject_type is not None
        stype = state.subject_type if state.subject_type is not None else event.subject_type
        consulted = state.consulted(event.subject_type)
        bodies: dict[str, dict[str, Any]] = {}
        dec_id = self.ids.decision_id(event.event_fp, self.policy_version)
        # One event's records share their decision time and subject reference.
        recorded_at = self.now()
        subject = self.subject_ref(event.customer_id)
        for agent in agents:
            precision = self.policy.agents[agent].timestamp_precision
            body = bodies.get(precision)
            if body is None:
                # No publisher event id reaches an agent, and no time more precise than
                # its purpose needs: both would let agents join their data.
                body = {k: v for k, v in event.body.items() if k != "event_id"}
                body["occurred_at"] = cut_time(event.occurred_at, precision)
                bodies[precision] = body
            d = self.engine.decide(
                agent,
                event.event_type,
                body,
                stype,
                state,
                event.reference_date,
                subject_type_verified=verified,
            )
            rec, msg = self._emit(event, d, dec_id, stype, consulted, recorded_at, subject)
            out.records.append(rec)
            if msg is not None:
                out.messages.append(msg)
            if d.contribution is not None:
                out.contributions.append(
                    Contribution(
                        agent,
                        self.agent_ref(agent, event.event_fp),
                        self.aggregate_subject(agent, event.customer_id),
                        event.occurred_at,
                        d.contribution,
                    )
                )

    def _emit(
        self,
        event: Event,
        d: Decision,
        dec_id: str,
        subject_type: str,
        consulted: dict[str, Any],
        recorded_at: datetime,
        subject_ref: str,
    ) -> tuple[DecisionRecord, AgentMessage | None]:
        agent = self.policy.agents[d.agent]
        digest_of_decision = self.decision_digest(d)
        rid = self.ids.record_id(event.event_fp, d.agent, "event", digest_of_decision)
        key_id = digest = topic = None
        msg = None
        if d.payload is not None:
            key = self.message_key(d.agent, event.customer_id)
            ref = self.agent_ref(d.agent, event.event_fp)
            body = dict(d.payload)
            body["_gateway"] = {
                "disclosure_id": rid,
                "ref": ref,
                "subject": key.decode(),
                "purposes": d.purposes,
                "removed": d.paths_removed,
                "transformed": d.paths_transformed,
                "policy_version": self.policy_version,
            }
            sealed = self.sealers[d.agent].seal(
                orjson.dumps(body), ref=ref, disclosure_id=rid, kind="disclosure"
            )
            key_id, digest, topic = sealed.key_id, payload_digest(sealed.message), agent.topic
            msg = AgentMessage(d.agent, agent.topic, key, sealed.message, rid, "disclosure")
        # Built from trusted, already-validated values: skip pydantic validation (hot path).
        rec = DecisionRecord.trusted(
            record_id=rid,
            decision_id=dec_id,
            event_id=event.event_id,
            event_type=event.event_type,
            occurred_at=event.occurred_at,
            recorded_at=recorded_at,
            subject_ref=subject_ref,
            subject_type=subject_type,
            agent=d.agent,
            recipient=self.recipients[d.agent],
            outcome=d.outcome,
            reason=d.reason,
            purposes=d.purposes,
            legal_bases=d.legal_bases,
            categories_sent=d.categories_sent,
            categories_transformed=d.categories_transformed,
            categories_removed=d.categories_removed,
            paths_sent=d.paths_sent,
            paths_transformed=d.paths_transformed,
            paths_removed=d.paths_removed,
            consent=d.consent,
            policy_version=self.policy_version,
            key_id=key_id,
            payload_digest=digest,
            topic=topic,
            event_fp=event.event_fp,
            consent_state=consulted,
        )
        return rec, msg

    # --- erasure ---------------------------------------------------------------------------

    def erasure_request(self, event: Event, before: ConsentState) -> ErasureRequest:
        """The control message for a subject's first erasure request."""
        stype = before.subject_type or event.subject_type
        return ErasureRequest(
            event_id=event.event_id,
            event_fp=event.event_fp,
            requested_at=event.body["occurred_at"],
            subject_type=stype,
            subject_refs=[self.subject_ref(event.customer_id)],
            agent_subjects={
                agent: [self.message_key(agent, event.customer_id).decode()]
                for agent in self.policy.agents
            },
            policy_version=self.policy_version,
        )

    def erasure_outputs(
        self, request: ErasureRequest, records: Iterable[DecisionRecord]
    ) -> EventResult:
        """The notice records and sealed notices for ``request``, built from ``records``
        (the log up to the request: the subject's disclosures among them)."""
        out = EventResult()
        notices = erasure_notices(
            request, records, self.agent_ref, agents=[a for a in self.policy.agents]
        )
        requested = datetime.fromisoformat(request.requested_at.replace("Z", "+00:00"))
        dec_id = self.ids.decision_id(request.event_fp, self.policy_version)
        for agent_name, payload in notices:
            agent = self.policy.agents[agent_name]
            purposes, bases = [NOTICE_PURPOSE], [NOTICE_LEGAL_BASIS]
            digest_of_decision = decision_digest(
                "erasure_notice", None, [], [], [], purposes, bases, self.policy_version
            )
            rid = self.ids.record_id(request.event_fp, agent_name, "erasure", digest_of_decision)
            subjects = request.agent_subjects.get(agent_name) or [""]
            body = dict(payload)
            body["_gateway"] = {
                "disclosure_id": rid,
                "ref": payload["ref"],
                "subject": subjects[0],
                "purposes": purposes,
                "removed": [],
                "transformed": [],
                "policy_version": self.policy_version,
            }
            sealed = self.sealers[agent_name].seal(
                orjson.dumps(body), ref=payload["ref"], disclosure_id=rid, kind="erasure_notice"
            )
            out.messages.append(
                AgentMessage(
                    agent_name,
                    agent.topic,
                    subjects[0].encode(),
                    sealed.message,
                    rid,
                    "erasure_notice",
                )
            )
            out.records.append(
                DecisionRecord.trusted(
                    record_id=rid,
                    decision_id=dec_id,
                    event_id=request.event_id,
                    event_type=ERASURE,
                    occurred_at=requested,
                    recorded_at=self.now(),
                    subject_ref=request.subject_refs[0],
                    subject_type=request.subject_type,
                    agent=agent_name,
                    recipient=self.recipients[agent_name],
                    outcome="erasure_notice",
                    reason=None,
                    purposes=purposes,
                    legal_bases=bases,
                    categories_sent=[],
                    categories_transformed=[],
                    categories_removed=[],
                    paths_sent=[],
                    paths_transformed=[],
                    paths_removed=[],
                    consent=["erasure_requested"],
                    policy_version=self.policy_version,
                    key_id=sealed.key_id,
                    payload_digest=payload_digest(sealed.message),
                    topic=agent.topic,
                    event_fp=request.event_fp,
                    consent_state=None,
                )
            )
        return out
