"""The at-least-once batch protocol: a batch of input events, each decision logged before
anything is disclosed to an agent, the input acknowledged last.

:meth:`BatchProtocol.process` takes one batch through these steps, in this order; each
step that writes waits until the broker acknowledged every message of it before the next
step starts, so whatever a crash interrupts, what is durable is a prefix of the list:

1. **Owned and ready.** Keep the events of the partitions this worker still holds, and
   wait until the consent state of those partitions is restored.
2. **Skip what is applied.** An event at or below its partition's *applied marker* (the
   last input offset whose effects the consent state already holds: decided before a
   crash or a rebalance, offsets not yet committed) is acknowledged and not decided
   again: deciding it against the newer state could decide differently under the same
   ids.
3. **Decide** every event against the consent state (changes stay local to the batch).
4. **Log**: every decision record to the disclosure topic, dead letters to theirs.
5. **Disclose**: the sealed agent messages to the agent topics. No agent message exists
   without its record.
6. **Changelog**: the batch's consent changes, each to the changelog partition of the
   event that caused it, then per partition the applied marker (the partition's last
   offset in the batch).
7. **Acknowledge** the input events (offsets are committed after this), and take the
   consent changes into the table -- except for a partition revoked or restored while
   the batch was out (its *generation* changed): its state here is gone or re-read, so
   its events are left unacknowledged for whoever holds the partition now, who skips
   them by the marker if step 6 wrote it.

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
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import orjson

from gateway.consent import ConsentState
from gateway.pipeline import EventResult, Pipeline
from gateway.stream import metrics
from gateway.stream.consent_store import OFFSET_KEY, ConsentStore, offset_marker

log = logging.getLogger("gateway.stream")

Headers = list[tuple[str, bytes]]
# One output message: (topic, key, value, headers).
Item = tuple[str, bytes | None, bytes, Headers | None]

# How often step 1 looks again while a partition's consent state is being restored.
READY_POLL_SECONDS = 0.05


# --- what the protocol needs from the stream ---------------------------------------------


class InputMessage(Protocol):
    """One input event as fetched: where it was read, and its bytes."""

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


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
        self, items: Sequence[Item], partitions: Sequence[int] | None = None, *, what: str
    ) -> None:
        """Send ``items`` (to ``partitions``, one per item, or by key when None) and return
        once the broker acknowledged every one. ``what`` names them in logs."""
        ...


@dataclass
class Decided(Generic[M]):
    """A batch after step 3: its events, what each caused, and its consent changes."""

    messages: Sequence[M]
    outcomes: list[EventResult]
    # The changed consent states, as (partition of the event that caused the change,
    # customer id, the state as changelog JSON, the state).
    writes: list[tuple[int, str, bytes, ConsentState]]

    def last_offsets(self) -> dict[int, int]:
        """Per input partition, the batch's last offset."""
        last: dict[int, int] = {}
        for m in self.messages:
            last[m.partition] = max(last.get(m.partition, -1), m.offset)
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
        stats: dict[str, int] | None = None,
    ):
        self.pipeline = pipeline
        self.consumer = consumer
        self.consent = consent
        self.sender = sender
        self.disclosure_topic = disclosure_topic
        self.dead_letter_topic = dead_letter_topic
        self.changelog_topic = changelog_topic
        # Shown on the health page: events processed, subjects in the consent table.
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("processed", 0)

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

        self.stats["processed"] += len(done)
        self.stats["subjects"] = self.consent.size()
        metrics.EVENTS_DONE.inc(len(done))
        metrics.BATCH_SIZE.observe(len(done))
        metrics.BATCH_SECONDS.observe(loop.time() - started)
        return done

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
        done = [m for m in messages if m.offset <= applied(m.partition)]
        if not done:
            return messages
        for m in done:
            self.consumer.acknowledge(m)
        self.stats["processed"] += len(done)
        return [m for m in messages if m.offset > applied(m.partition)]

    def decide(self, messages: Sequence[M]) -> Decided[M]:
        """Step 3: every event decided in order, each against the consent state as the
        events before it in the batch left it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        overlay = Overlay(self.consent.get)
        outcomes = []
        for i, m in enumerate(messages):
            overlay.index = i
            overlay.partition = m.partition
            # A null value (a tombstone) is no event: dead-lettered as not JSON.
            # (The pipeline never raises: a crash is dead-lettered inside it.)
            outcomes.append(self.pipeline.process(m.value if m.value is not None else b"", overlay))
        writes = [
            (messages[i].partition, customer_id, orjson.dumps(state.to_dict()), state)
            for customer_id, (state, i) in overlay.changes.items()
        ]
        metrics.BATCH_PHASE_SECONDS.labels("decide").observe(loop.time() - started)
        return Decided(messages, outcomes, writes)

    async def publish(self, batch: Decided[M]) -> None:
        """Steps 4 and 5: log, then disclose. The records are durable before any agent
        message exists."""
        await self.log(batch)
        await self.disclose(batch)

    async def log(self, batch: Decided[M]) -> None:
        """Step 4: the decision records and the dead letters."""
        items: list[Item] = [
            (
                self.disclosure_topic,
                r.subject_ref.encode(),
                r.to_json(),
                [("record_id", r.record_id.encode())],
            )
            for out in batch.outcomes
            for r in out.records
        ]
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
        with _phase("log"):
            await self.sender.send(items, what="records and dead letters")

    async def disclose(self, batch: Decided[M]) -> None:
        """Step 5: the sealed agent messages."""
        items: list[Item] = [
            (m.topic, m.key, m.value, [("disclosure_id", m.disclosure_id.encode())])
            for out in batch.outcomes
            for m in out.messages
        ]
        with _phase("disclose"):
            await self.sender.send(items, what="agent messages")

    async def write_changelog(self, batch: Decided[M]) -> None:
        """Step 6: the consent changes, each to the partition of the event that caused it
        (the changelog is co-partitioned with the input), then each of those partitions'
        applied marker, last."""
        if not batch.writes:
            return
        last = batch.last_offsets()
        marked = sorted({p for p, _, _, _ in batch.writes})
        topic = self.changelog_topic
        items: list[Item] = [(topic, cid.encode(), raw, None) for _, cid, raw, _ in batch.writes]
        items += [(topic, OFFSET_KEY.encode(), offset_marker(last[p]), None) for p in marked]
        partitions = [p for p, _, _, _ in batch.writes] + marked
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
        for p, offset in batch.last_offsets().items():
            if p not in stale:
                consent.set_applied(p, offset)
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
