"""The at-least-once batch protocol: a batch of input events, each decision logged before
anything is disclosed to an agent, the input acknowledged last.

:meth:`BatchProtocol.process` takes one batch through these steps, in this order. Three
of them write, each in **one** send that the broker acknowledges before the next of them
starts, so whatever a crash interrupts, what is durable of a batch is a prefix of the
list:

1. **Owned and ready.** Keep the events of the partitions this worker still holds, and
   wait until the consent state of those partitions is restored.
2. **Skip what is applied.** An event at or below its partition's *applied marker* (per
   source: the last offset whose effects the consent state already holds: decided before
   a crash or a rebalance, offsets not yet committed) is acknowledged and not decided
   again: deciding it against the newer state could decide differently under the same
   ids.
3. **Admit, route, decide.** Every event is admitted (size, card numbers, the publisher's
   signature, schema, the publisher's right to send it; the batch's signatures are
   checked first, on several threads: see :mod:`gateway.stream.signatures`). An admitted
   event whose customer is decided on another partition than the one it was read from
   (see *Subject routing*) is set aside to be forwarded; every other one is decided
   against its customer's consent state (changes stay local to the batch), and moves its
   partition's aggregate windows (its contributions to aggregate-only agents are added
   there; see :mod:`gateway.stream.aggregation`).
4. **Log** (one send): every decision record to the disclosure topic, dead letters to
   theirs, and the events set aside to the re-partition topic, each to its customer's
   partition. None of these needs another acknowledged first, and each only has to be
   durable before the batch's marker (step 6), so they share a produce request.
5. **Disclose** (one send, after step 4 is acknowledged): the sealed agent messages to
   the agent topics, and the aggregate partials the batch changed, with its partitions'
   watermarks, to the aggregates topic (for the combiner). No agent message exists
   without its record.
6. **Changelog** (one send, after step 5 is acknowledged): the batch's consent changes,
   each to the changelog partition of its subject, and its partitions' changed aggregate
   windows, then per partition and source the applied marker (the last offset of the
   batch from that partition and source).
7. **Acknowledge** the input events (offsets are committed after this), and take the
   consent changes into the table -- except for a partition revoked or restored while
   the batch was out (its *generation* changed): its state here is gone or re-read, so
   its events are left unacknowledged for whoever holds the partition now, who skips
   them by the marker if step 6 wrote it.

**Why the changelog does not share the log's send.** The marker must not be durable
before the batch's agent messages are: a crash in between would leave events that a
restarted worker skips (step 2) but whose messages never went out. And a consent change
must not be durable without its marker: a restarted worker would decide the batch's
earlier events again against the newer state (step 2). A consent change and the marker of
its partition go to the same changelog partition in one send, the marker last, as one
record batch (while they fit in one: the producer's batch size, 512 KiB), which the broker
appends whole: durable together or not at all. So step 6 can neither move into
step 4 (before the disclosures) nor be split across them. Three acknowledged round trips
per batch are the floor: record before message, message before marker.

**Subject routing.** A customer's events must all be decided against one consent state,
in one order, whatever client, partitioner or key their publishers used. The customer's
*subject partition* is :func:`gateway.routing.subject_partition` of the customer id: what
murmur2 (the Java client's and kafka-python's default partitioner) gives for the customer
id as key. The consent state of a subject partition, its changelog partition and the
re-partition topic's partition of that number belong to the worker holding the input
partition of that number (faust assigns co-partitioned topics together). An event read
from the input partition of its subject partition -- a publisher keying by customer id
with such a client -- is decided at once; any other is forwarded (its bytes and its
publisher's headers, with where it was read and a worker MAC,
:class:`~gateway.integrity.WorkerMac`) to the re-partition topic, and decided when read
from there. A message on the re-partition topic without a valid MAC is dead-lettered
``forged_forward`` (its signature is not checked again: the MAC says a worker did).

A customer's events are decided in the order they reach the subject partition. An event
that arrives after a newer one: a consent change older than the state it would override
(by ``occurred_at``, then event id) is dead-lettered ``superseded``; any other event is
decided under the restrictions in force when it is decided (an erasure is final; an
opt-out already applied is honoured by the late order).

A crash anywhere re-delivers the batch: records and messages carry the same ids the
second time, so duplicates are recognisable and harmless. A send the broker does not
acknowledge is retried, the batch held, for as long as the broker is away (see
:mod:`gateway.stream.sender`).

The protocol sees the stream through three small interfaces, so tests drive it with
fakes: :class:`InputConsumer` (assignment, acknowledgement), :class:`Sender` (send until
acknowledged) and the :class:`~gateway.stream.consent_store.ConsentStore`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import orjson

from gateway.consent import ConsentState
from gateway.erasure import ERASURE_REQUEST_KIND, HEADER_KIND
from gateway.errors import ForgedForward, Misrouted
from gateway.integrity import HEADER_MAC, WorkerMac, header, header_pairs
from gateway.pipeline import Admitted, DeadLetter, EventResult, Pipeline, SignatureCheck
from gateway.publishers import HEADER_PUBLISHER, HEADER_SIGNATURE
from gateway.routing import subject_partition
from gateway.stream import metrics
from gateway.stream.aggregation import AggregateBatch, WorkerAggregation
from gateway.stream.consent_store import MARKER_KEYS, ConsentStore, Source, offset_marker
from gateway.stream.signatures import SignatureChecks

log = logging.getLogger("gateway.stream")

Headers = list[tuple[str, bytes]]
# One output message: (topic, key, value, headers).
Item = tuple[str, bytes | None, bytes, Headers | None]

# Where a forwarded event was read: JSON {"topic", "partition", "offset"}.
HEADER_ORIGIN = "gateway-origin"
_PUBLISHER_HEADERS = (HEADER_PUBLISHER, HEADER_SIGNATURE)


def publisher_headers(headers: Headers) -> Headers:
    """The headers a forwarded event carries from its publisher (and its MAC covers)."""
    return [(k, v) for k, v in headers if k in _PUBLISHER_HEADERS]


def _value(message: InputMessage) -> bytes:
    # A null value (a tombstone) is no event: dead-lettered as not JSON.
    return message.value if message.value is not None else b""


# How often step 1 looks again while a partition's consent state is being restored.
READY_POLL_SECONDS = 0.05


# --- what the protocol needs from the stream ---------------------------------------------


class InputMessage(Protocol):
    """One input event as fetched: where it was read, its bytes and its headers."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Any: ...


M = TypeVar("M", bound=InputMessage)
M_contra = TypeVar("M_contra", bound=InputMessage, contravariant=True)


class InputConsumer(Protocol[M_contra]):
    """The consumer of the input topic."""

    def assigned_partitions(self) -> Collection[int]:
        """The input partitions this worker holds now."""
        ...

    def acknowledge(self, message: M_contra) -> None:
        """Done with ``message``: its offset may be committed."""
        ...


class Sender(Protocol):
    async def send(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None, *, what: str
    ) -> None:
        """Send ``items`` (to ``partitions``, one per item, None: by key; or all by key when
        None) and return once the broker acknowledged every one. ``what`` names them in
        logs."""
        ...


@dataclass
class Decided(Generic[M]):
    """A batch after step 3: its events, what each caused, and its consent changes."""

    messages: Sequence[M]
    outcomes: list[EventResult]
    # The changed consent states, as (the subject's partition, customer id, the state as
    # changelog JSON, the state).
    writes: list[tuple[int, str, bytes, ConsentState]]
    # Events to forward to their customer's partition: (item, partition, message index).
    forwards: list[tuple[Item, int, int]] = field(default_factory=list)
    # The source of each message (by index): read from the input or forwarded to us.
    sources: list[Source] = field(default_factory=list)
    # What the batch did to its partitions' aggregate windows (None: no aggregate agent).
    aggregates: AggregateBatch | None = None

    def last_offsets(self) -> dict[tuple[Source, int], int]:
        """Per source and partition, the batch's last offset."""
        last: dict[tuple[Source, int], int] = {}
        for m, source in zip(self.messages, self.sources, strict=True):
            k = (source, m.partition)
            last[k] = max(last.get(k, -1), m.offset)
        return last


# --- the protocol ------------------------------------------------------------------------


class BatchProtocol(Generic[M]):
    """The steps above, for one worker: its input consumer, its consent table, and the
    sender of its outputs. (The fault tests subclass it, overriding :meth:`publish`, the
    order of steps 4 and 5, to prove that they catch a wrong order.)"""

    def __init__(
        self,
        pipeline: Pipeline,
        consumer: InputConsumer[M],
        consent: ConsentStore,
        sender: Sender,
        *,
        disclosure_topic: str,
        dead_letter_topic: str,
        changelog_topic: str,
        subjects_topic: str,
        partitions: int,
        mac: WorkerMac,
        stats: dict[str, int] | None = None,
        aggregation: WorkerAggregation | None = None,
        signatures: SignatureChecks | None = None,
    ):
        self.pipeline = pipeline
        self.consumer = consumer
        self.consent = consent
        self.sender = sender
        self.disclosure_topic = disclosure_topic
        self.dead_letter_topic = dead_letter_topic
        self.changelog_topic = changelog_topic
        self.subjects_topic = subjects_topic
        self.partitions = partitions
        self.mac = mac
        # Shown on the health page: events processed, subjects in the consent table.
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("processed", 0)
        # The aggregate windows of the subject partitions held here (None: no aggregate
        # agent in the policy).
        self.aggregation = aggregation
        # Seconds to decide one event, recently (a moving average; None: no batch yet).
        self.decide_cost: float | None = None
        # Who checks a batch's publisher signatures ahead (None: each as it is admitted).
        self.signatures = signatures

    async def process(self, messages: Sequence[M]) -> list[M]:
        """Take one batch (in offset order per partition) through the protocol. Returns the
        messages decided and acknowledged here."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        # Step 1. Owned and ready.
        messages = await self.owned_and_ready(messages)

        # Step 2. Skip what is applied: acknowledged, not decided again.
        messages = self.skip_applied(messages)
        if not messages:
            return []
        metrics.EVENTS_IN.inc(len(messages))
        # Before any output goes out: step 7 compares them.
        generations = {p: self.consent.generation(p) for p in {m.partition for m in messages}}

        # Step 3. Decide.
        batch = self.decide(messages)

        # Steps 4 and 5. Log, then disclose.
        await self.publish(batch)
        self.count(batch)

        # Step 6. Changelog.
        await self.write_changelog(batch)

        # Step 7. Acknowledge the partitions whose generation is unchanged.
        done = self.acknowledge(batch, generations)

        # "processed": events decided (or dead-lettered) here; an event forwarded to its
        # customer's partition counts there, when decided.
        forwarded = {id(batch.messages[i]) for _, _, i in batch.forwards}
        moved = sum(1 for m in done if id(m) in forwarded)
        self.stats["processed"] += len(done) - moved
        self.stats["forwarded"] = self.stats.get("forwarded", 0) + moved
        self.stats["subjects"] = self.consent.size()
        metrics.EVENTS_DONE.inc(len(done))
        metrics.BATCH_SIZE.observe(len(done))
        metrics.BATCH_SECONDS.observe(loop.time() - started)
        return done

    def batch_limit(self, budget: float, most: int) -> int:
        """How many events the next batch may take so that deciding it is estimated to take
        at most ``budget`` seconds (at the recent cost per event), and at most ``most``."""
        cost = self.decide_cost
        if cost is None or cost <= 0:
            return most
        return max(1, min(most, int(budget / cost)))

    # --- the steps, in order --------------------------------------------------------------

    async def owned_and_ready(self, messages: Sequence[M]) -> Sequence[M]:
        """Step 1: the messages of partitions still assigned to us, once their consent
        state is restored. A partition revoked meanwhile is left to its new owner (its
        messages are not acknowledged, so it reads them again); waiting for its state
        would never end."""
        while True:
            assigned = set(self.consumer.assigned_partitions())
            if any(m.partition not in assigned for m in messages):
                messages = [m for m in messages if m.partition in assigned]
            if not messages or self.consent.ready(m.partition for m in messages):
                return messages
            await asyncio.sleep(READY_POLL_SECONDS)

    def skip_applied(self, messages: Sequence[M]) -> Sequence[M]:
        """Step 2: acknowledge the messages at or below their partition's applied marker
        (their outputs and state are durable); the rest go on."""
        applied = self.consent.applied
        source = self.source
        done = [m for m in messages if m.offset <= applied(m.partition, source(m))]
        if not done:
            return messages
        for m in done:
            self.consumer.acknowledge(m)
        self.stats["processed"] += len(done)
        return [m for m in messages if m.offset > applied(m.partition, source(m))]

    def source(self, message: InputMessage) -> Source:
        return "forwarded" if message.topic == self.subjects_topic else "input"

    def decide(self, messages: Sequence[M]) -> Decided[M]:
        """Step 3: every event decided in order, each against the consent state as the
        events before it in the batch left it."""
        # No cyclic collection while deciding: a batch allocates hundreds of thousands of
        # objects, nearly all freed by reference counting, and each collection would also
        # walk the batch's outputs made so far. Measured on a worker over 30,000 events:
        # the collector's time fell from 24 to 7--9 µs per event. (Step 3 does not await:
        # nothing else runs with the collector off, and a cycle made here waits at most
        # until the batch is decided.)
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._decide_all(messages)
        finally:
            if collecting:
                gc.enable()

    def _decide_all(self, messages: Sequence[M]) -> Decided[M]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        cpu = time.thread_time()
        overlay = Overlay(self.consent.get)
        outcomes = []
        forwards: list[tuple[Item, int, int]] = []
        sources = [self.source(m) for m in messages]
        headers = [header_pairs(m.headers) for m in messages]
        signers = self.check_signatures(messages, sources, headers)
        aggregates = self.aggregation.batch() if self.aggregation is not None else None
        for i, m in enumerate(messages):
            overlay.index = i
            overlay.partition = m.partition
            n_forwards = len(forwards)
            out = self.decide_one(m, sources[i], headers[i], overlay, forwards, i, signers[i])
            outcomes.append(out)
            if (
                aggregates is not None
                and out.event is not None
                and out.dead_letter is None
                and len(forwards) == n_forwards  # decided here, not forwarded
            ):
                aggregates.event(m.partition, out.event.occurred_at, out.contributions)
        writes = [
            (messages[i].partition, customer_id, orjson.dumps(state.to_dict()), state)
            for customer_id, (state, i) in overlay.changes.items()
        ]
        elapsed = loop.time() - started
        metrics.BATCH_PHASE_SECONDS.labels("decide").observe(elapsed)
        # This thread's CPU time in the same span: what the wall time has beyond it is
        # time the worker was not running (the broker, the consumer thread, the machine).
        metrics.DECIDE_CPU_SECONDS.inc(time.thread_time() - cpu)
        cost = elapsed / len(messages)
        self.decide_cost = cost if self.decide_cost is None else 0.8 * self.decide_cost + 0.2 * cost
        return Decided(messages, outcomes, writes, forwards, sources, aggregates)

    def check_signatures(
        self, messages: Sequence[M], sources: Sequence[Source], headers: Sequence[Headers]
    ) -> list[SignatureCheck | None]:
        """Step 3's signature checks, ahead of deciding: per message, what its publisher
        signature check found (None: checked as it is admitted, and for forwarded events,
        which the forwarding worker checked)."""
        if self.signatures is None:
            return [None] * len(messages)
        inputs = [i for i, source in enumerate(sources) if source == "input"]
        found = self.signatures.check([(_value(messages[i]), headers[i]) for i in inputs])
        out: list[SignatureCheck | None] = [None] * len(messages)
        for i, signer in zip(inputs, found, strict=True):
            out[i] = signer
        return out

    def decide_one(
        self,
        m: M,
        source: Source,
        headers: Headers,
        overlay: Overlay,
        forwards: list[tuple[Item, int, int]],
        index: int,
        signer: SignatureCheck | None = None,
    ) -> EventResult:
        """One event of step 3: admitted, then decided here or set aside for forwarding.
        ``signer``: its signature check, done ahead (None: checked here). (The pipeline
        never raises: a crash is dead-lettered inside it.)"""
        value = _value(m)
        got: Admitted | DeadLetter
        if source == "forwarded":
            origin = header(headers, HEADER_ORIGIN)
            publisher = publisher_headers(headers)
            if origin is None or not self.mac.forward_ok(
                value, origin, publisher, header(headers, HEADER_MAC)
            ):
                err = ForgedForward(
                    "a message on the re-partition topic without a valid worker MAC: not"
                    " forwarded by a gateway worker (no publisher may write to"
                    f" {self.subjects_topic})"
                )
                got = self.pipeline.dead_letter(value, err)
            else:
                # The forwarding worker verified the signature; the MAC says it did.
                got = self.pipeline.admit(value, verify=False)
        else:
            got = self.pipeline.admit(value, headers, signer=signer)
        if isinstance(got, DeadLetter):
            return EventResult(dead_letter=got.at(m.topic, m.partition, m.offset))
        home = subject_partition(got.event.customer_id, self.partitions)
        if home != m.partition:
            if source == "forwarded":
                err2 = Misrouted(
                    f"forwarded to partition {m.partition}, but its customer is decided on"
                    f" partition {home}: do all workers run with the same GATEWAY_PARTITIONS"
                    f" and does {self.subjects_topic} have that many partitions?",
                    event_id=got.event.event_id,
                )
                return EventResult(
                    dead_letter=self.pipeline.dead_letter(value, err2).at(
                        m.topic, m.partition, m.offset
                    )
                )
            forwards.append((self.forward_item(m, value, headers, got), home, index))
            return EventResult(event=got.event)
        return self.pipeline.decide(got, overlay, seen=self.consent.seen(m.partition))

    def forward_item(
        self, m: M, value: bytes, headers: list[tuple[str, bytes]], admitted: Admitted
    ) -> Item:
        """The re-partition message for an event read on the wrong partition: the same
        bytes and publisher headers, where it was read, and the worker MAC over them."""
        origin = orjson.dumps({"topic": m.topic, "partition": m.partition, "offset": m.offset})
        publisher = publisher_headers(headers)
        mac = self.mac.forward(value, origin, publisher)
        out = [*publisher, (HEADER_ORIGIN, origin), (HEADER_MAC, mac)]
        return (self.subjects_topic, admitted.event.customer_id.encode(), value, out)

    async def publish(self, batch: Decided[M]) -> None:
        """Steps 4 and 5: log, then disclose. The records are durable before any agent
        message exists."""
        await self.log(batch)
        await self.disclose(batch)

    async def log(self, batch: Decided[M]) -> None:
        """Step 4: the decision records, the dead letters and the events forwarded to their
        customer's partition, in one send."""
        mac = self.mac.record
        items: list[Item] = []
        for out in batch.outcomes:
            for r in out.records:
                value = r.to_json()
                items.append(
                    (
                        self.disclosure_topic,
                        r.subject_ref.encode(),
                        value,
                        [("record_id", r.record_id.encode()), (HEADER_MAC, mac(value))],
                    )
                )
            if (request := out.erasure_request) is not None:
                # After the subject's records, under the same key (so on the same
                # partition, in order): whoever reads the log up to here builds the
                # agents' notices from it (gateway.erasure).
                value = request.to_json()
                items.append(
                    (
                        self.disclosure_topic,
                        request.subject_refs[0].encode(),
                        value,
                        [(HEADER_KIND, ERASURE_REQUEST_KIND), (HEADER_MAC, mac(value))],
                    )
                )
        items += [
            (
                self.dead_letter_topic,
                d.event_id.encode(),
                d.to_json(),
                [("reason", d.reason.encode())],
            )
            for out in batch.outcomes
            if (d := out.dead_letter) is not None
        ]
        partitions: list[int | None] | None = None
        if batch.forwards:
            # Forwarded events go to their customer's partition of the re-partition
            # topic; the rest by key.
            metrics.FORWARDED.inc(len(batch.forwards))
            partitions = [None] * len(items) + [p for _, p, _ in batch.forwards]
            items += [item for item, _, _ in batch.forwards]
        with _phase("log"):
            await self.sender.send(
                items, partitions, what="records, dead letters and forwarded events"
            )

    async def disclose(self, batch: Decided[M]) -> None:
        """Step 5: the sealed agent messages."""
        items: list[Item] = [
            (m.topic, m.key, m.value, [("disclosure_id", m.disclosure_id.encode())])
            for out in batch.outcomes
            for m in out.messages
        ]
        partitions: list[int | None] | None = None
        if batch.aggregates is not None:
            to_combiner, _ = batch.aggregates.outputs(self.changelog_topic)
            if to_combiner:
                # The aggregates topic has one partition; the rest go by key.
                partitions = [None] * len(items) + [0] * len(to_combiner)
                items += to_combiner
        with _phase("disclose"):
            await self.sender.send(items, partitions, what="agent messages")

    async def write_changelog(self, batch: Decided[M]) -> None:
        """Step 6: the consent changes, each to its subject's partition (the changelog is
        co-partitioned with the input and the re-partition topic), then those partitions'
        applied markers, one per source the batch read from, last. Every entry carries a
        worker MAC: a restore ignores any other.

        A batch that moved aggregate windows sent their partials to the aggregates topic
        in step 5 (acknowledged); their windows go to the changelog with the consent
        changes, before the markers: whatever a marker covers, the combiner and a restore
        both have."""
        topic = self.changelog_topic
        windows: list[tuple[Item, int]] = []
        if batch.aggregates is not None:
            _, windows = batch.aggregates.outputs(topic)
        if not batch.writes and not windows:
            return
        last = batch.last_offsets()
        changed = {p for p, _, _, _ in batch.writes} | {p for _, p in windows}
        marked = sorted(k for k in last if k[1] in changed)
        mac = self.mac.changelog
        items: list[Item] = []
        for _, cid, raw, _ in batch.writes:
            key = cid.encode()
            items.append((topic, key, raw, [(HEADER_MAC, mac(key, raw))]))
        items += [item for item, _ in windows]
        for source, p in marked:
            key, value = MARKER_KEYS[source].encode(), offset_marker(last[(source, p)])
            items.append((topic, key, value, [(HEADER_MAC, mac(key, value))]))
        partitions: list[int | None] = [p for p, _, _, _ in batch.writes]
        partitions += [p for _, p in windows]
        partitions += [p for _, p in marked]
        with _phase("changelog"):
            await self.sender.send(items, partitions, what="consent changes")

    def acknowledge(self, batch: Decided[M], generations: dict[int, int]) -> list[M]:
        """Step 7: take the consent changes into the table and acknowledge the events,
        for the partitions whose generation is what it was before step 4. Returns the
        messages acknowledged."""
        consent = self.consent
        stale = {p for p, g in generations.items() if consent.generation(p) != g}
        for p, cid, raw, state in batch.writes:
            if p not in stale:
                consent.set_local(p, cid, raw, state)
        for (source, p), offset in batch.last_offsets().items():
            if p not in stale:
                consent.set_applied(p, offset, source)
        done = [m for m in batch.messages if m.partition not in stale]
        for m in done:
            self.consumer.acknowledge(m)
        return done

    @staticmethod
    def count(batch: Decided[M]) -> None:
        """The batch's published outputs, in the metrics."""
        # Counted per label first: a labelled child lookup costs microseconds, and there
        # are few distinct labels per batch but thousands of outputs.
        records = [r for out in batch.outcomes for r in out.records]
        metrics.RECORDS.inc(len(records))
        withheld = Counter((r.agent, r.reason or "") for r in records if r.outcome == "withheld")
        for labels, n in withheld.items():
            metrics.WITHHELD.labels(*labels).inc(n)
        sent = Counter((m.agent, m.kind) for out in batch.outcomes for m in out.messages)
        for labels, n in sent.items():
            metrics.MESSAGES_OUT.labels(*labels).inc(n)
        dead = Counter(d.reason for out in batch.outcomes if (d := out.dead_letter) is not None)
        for reason, n in dead.items():
            metrics.DEAD_LETTERS.labels(reason).inc(n)


@contextmanager
def _phase(name: str) -> Iterator[None]:
    """Times a block as one phase of a batch (``gateway_batch_phase_seconds``)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    yield
    metrics.BATCH_PHASE_SECONDS.labels(name).observe(loop.time() - started)


@dataclass
class Overlay(MutableMapping[str, ConsentState]):
    """Consent states for one batch: reads fall through to the table; writes stay here
    (with the index of the event that made them) until step 7 takes them in."""

    load: Callable[[int, str], ConsentState | None]
    changes: dict[str, tuple[ConsentState, int]] = field(default_factory=dict)
    index: int = 0  # which event of the batch is being processed
    partition: int = 0  # and its input partition (the state's partition too)

    def __getitem__(self, key: str) -> ConsentState:
        if key in self.changes:
            return self.changes[key][0]
        got = self.load(self.partition, key)
        if got is None:
            raise KeyError(key)
        return got

    def __setitem__(self, key: str, value: ConsentState) -> None:
        self.changes[key] = (value, self.index)

    def __delitem__(self, key: str) -> None:  # pragma: no cover - the pipeline never deletes
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)
