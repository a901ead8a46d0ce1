"""The consent table: each subject's consent state, kept in memory per input partition and
backed by a compacted changelog topic, keyed by customer id and co-partitioned with the
input (a state change is written to the changelog partition of the event that caused it).

On partition assignment the partition's state is restored by reading its changelog
partition to the end — by fetching until the broker has nothing more, not by trusting
ListOffsets, which some brokers (Tansu) under-report. faust's own table recovery never
completes against that broker (its recovery fetches receive no changelog events), which
is why the gateway restores the table itself.

The changelog runs ahead of the committed input offsets: a batch's state changes are
written once its outputs are acknowledged, and the input offsets are committed a little
later. Events re-read after a rebalance or a crash would then be decided against a state
that already includes their own effects -- a consent change later in the same batch
could change an earlier event's decision under the same record id. So each batch's
changes end with a marker (key ``#offset``, never a customer id) naming the last input
offset of that partition whose effects the state holds; events up to it are known done
(outputs and state durable) and are acknowledged without being decided again.

The partition's aggregate windows (:mod:`gateway.stream.aggregation`) live in the same
changelog under keys starting ``#agg:`` (written before the batch's markers, like the
consent changes): a restore keeps them apart (:meth:`ConsentStore.take_aggregate_entries`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.consent import ConsentState
from gateway.integrity import HEADER_MAC, WorkerMac, header
from gateway.pipeline import DUPLICATES_PER_WORKER, DuplicateCache
from gateway.settings import Settings
from gateway.stream import metrics

log = logging.getLogger("gateway.stream")


def changelog_topic(settings: Settings) -> str:
    """The consent table's changelog topic of this deployment."""
    return f"{settings.app_id}-consent-changelog"


# The changelog keys of the per-partition progress markers, one per source a subject
# partition's events are read from: the input topic, and the re-partition topic (events
# forwarded from other input partitions). '#' is not allowed in a customer id (schemas:
# ^[A-Za-z0-9_.:-]+$), so neither can collide with a subject.
OFFSET_KEY = "#offset"
FORWARDED_OFFSET_KEY = "#offset:forwarded"

# The two sources of a subject partition's events.
Source = Literal["input", "forwarded"]
MARKER_KEYS: dict[Source, str] = {"input": OFFSET_KEY, "forwarded": FORWARDED_OFFSET_KEY}


# Changelog keys of a partition's aggregate windows and watermarks (never a customer id).
AGGREGATE_KEY_PREFIX = "#agg:"


def offset_marker(offset: int) -> bytes:
    return orjson.dumps({"input_offset": offset})


class Restored(NamedTuple):
    """What a changelog read found for some partitions."""

    # Per partition: each subject's latest state as written (JSON bytes).
    states: dict[int, dict[str, bytes | ConsentState]]
    # Per partition: the last input offset whose effects those states hold (the marker).
    applied: dict[int, int]
    # The same for the events forwarded to the partition (the re-partition topic).
    forwarded: dict[int, int] | None = None
    # Per partition: its aggregate entries (key ``#agg:...`` -> value), latest per key.
    aggregates: dict[int, dict[str, bytes]] | None = None


# Reads the changelog partitions given, to their end.
ReadChangelog = Callable[[list[int]], Awaitable[Restored]]


class ConsentStore:
    """The consent table of the partitions this worker holds, restored through
    ``read_changelog`` when a partition is assigned."""

    def __init__(self, read_changelog: ReadChangelog, *, duplicates: int = DUPLICATES_PER_WORKER):
        self._read = read_changelog
        # Event ids each partition's duplicate cache keeps.
        self._duplicates = duplicates
        # A subject's state as read from the changelog (bytes), replaced by the parsed
        # state on first use: parsed once, not once per event.
        self._parts: dict[int, dict[str, bytes | ConsentState]] = {}
        self._ready: dict[int, asyncio.Event] = {}
        # Per partition: the last input offset whose effects the state holds (-1: none
        # known), and a generation bumped whenever the partition is revoked or restored,
        # so a batch in flight across a rebalance can tell its view is gone.
        self._applied: dict[tuple[Source, int], int] = {}
        self._generation: dict[int, int] = {}
        # Per partition: the ids of events decided there lately (same lifetime as the
        # partition's states; see gateway.pipeline.DuplicateCache).
        self._seen: dict[int, DuplicateCache] = {}
        # Per partition: the aggregate entries the last restore read, until taken.
        self._aggregates: dict[int, dict[str, bytes]] = {}

    # --- state ---------------------------------------------------------------------

    def get(self, partition: int, customer_id: str) -> ConsentState | None:
        part = self._parts.get(partition)
        if part is None:
            return None
        got = part.get(customer_id)
        if got is None or isinstance(got, ConsentState):
            return got
        if not got:
            return None
        state = part[customer_id] = ConsentState.from_dict(orjson.loads(got))
        return state

    def set_local(
        self, partition: int, customer_id: str, value: bytes, state: ConsentState | None = None
    ) -> None:
        """Record a state written to the changelog (``state``: the same, parsed)."""
        self._parts.setdefault(partition, {})[customer_id] = state if state is not None else value

    def size(self) -> int:
        return sum(len(p) for p in self._parts.values())

    def applied(self, partition: int, source: Source = "input") -> int:
        """The last offset of ``partition`` of ``source`` already reflected in its state."""
        return self._applied.get((source, partition), -1)

    def set_applied(self, partition: int, offset: int, source: Source = "input") -> None:
        if offset > self._applied.get((source, partition), -1):
            self._applied[(source, partition)] = offset

    def seen(self, partition: int) -> DuplicateCache:
        """The duplicate cache of ``partition``'s subjects."""
        got = self._seen.get(partition)
        if got is None:
            got = self._seen[partition] = DuplicateCache(self._duplicates)
        return got

    def take_aggregate_entries(self, partition: int) -> dict[str, bytes]:
        """The partition's aggregate changelog entries as restored (once: the caller
        builds its aggregators from them and keeps them up to date itself)."""
        return self._aggregates.pop(partition, {})

    def generation(self, partition: int) -> int:
        return self._generation.get(partition, 0)

    def _bump(self, partition: int) -> None:
        self._generation[partition] = self._generation.get(partition, 0) + 1

    # --- rebalancing ---------------------------------------------------------------

    def _event(self, partition: int) -> asyncio.Event:
        ev = self._ready.get(partition)
        if ev is None:
            ev = self._ready[partition] = asyncio.Event()
        return ev

    def ready(self, partitions: Iterable[int]) -> bool:
        """Is the state of every one of ``partitions`` restored?"""
        return all(self._event(p).is_set() for p in set(partitions))

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._parts.pop(p, None)
            self._seen.pop(p, None)
            self._aggregates.pop(p, None)
            for source in MARKER_KEYS:
                self._applied.pop((source, p), None)
            self._bump(p)
            self._event(p).clear()

    async def restore(self, partitions: Iterable[int]) -> None:
        parts = sorted(set(partitions))
        if not parts:
            return
        for p in parts:
            self._bump(p)
            self._event(p).clear()
        loaded, applied, forwarded, aggregates = await self._read(parts)
        for p in parts:
            self._parts[p] = loaded.get(p, {})
            self._aggregates[p] = (aggregates or {}).get(p, {})
            self._seen.pop(p, None)
            self._applied[("input", p)] = applied.get(p, -1)
            self._applied[("forwarded", p)] = (forwarded or {}).get(p, -1)
            self._bump(p)
            self._event(p).set()
        log.info(
            "consent state restored for partitions %s (%d subjects)",
            parts,
            sum(len(v) for v in loaded.values()),
        )


class KafkaChangelog:
    """Reads changelog partitions of ``topic`` to their end: by fetching until the broker
    has had nothing more for ``quiet`` seconds after the reported end offsets are
    reached (ListOffsets alone under-reports on some brokers).

    Only entries a worker wrote count: each carries a MAC with the workers' key
    (:class:`~gateway.integrity.WorkerMac`); an entry without a valid one (written by
    anyone else with access to the broker: a forged state or progress marker) is
    ignored, counted and logged (without its content)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        mac: WorkerMac,
        *,
        quiet: float = 0.5,
        security: dict[str, Any] | None = None,
    ):
        self.bootstrap = bootstrap_servers
        self.topic = topic
        self.mac = mac
        self.quiet = quiet
        self.security = security or {}

    async def read(self, parts: list[int]) -> Restored:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap.split(","),
            enable_auto_commit=False,
            group_id=None,
            **self.security,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: dict[int, dict[str, bytes | ConsentState]] = {p: {} for p in parts}
            applied: dict[int, int] = {}
            forwarded: dict[int, int] = {}
            aggregates: dict[int, dict[str, bytes]] = {p: {} for p in parts}
            loop = asyncio.get_running_loop()
            last_data = loop.time()
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batch.items():
                    for m in records:
                        if m.key is None:
                            continue
                        if not self.mac.changelog_ok(m.key, m.value, header(m.headers, HEADER_MAC)):
                            metrics.CHANGELOG_REJECTED.inc()
                            log.warning(
                                "ignored a changelog entry without a valid worker MAC at "
                                "partition %d offset %d (not written by a gateway worker)",
                                tp.partition,
                                m.offset,
                            )
                            continue
                        key = m.key.decode()
                        if key in (OFFSET_KEY, FORWARDED_OFFSET_KEY):
                            if m.value is not None:
                                into = applied if key == OFFSET_KEY else forwarded
                                into[tp.partition] = int(orjson.loads(m.value)["input_offset"])
                            continue
                        if key.startswith(AGGREGATE_KEY_PREFIX):
                            if m.value is None:
                                aggregates[tp.partition].pop(key, None)
                            else:
                                aggregates[tp.partition][key] = m.value
                            continue
                        if m.value is None:  # a tombstone
                            out[tp.partition].pop(key, None)
                        else:
                            out[tp.partition][key] = m.value
                if batch:
                    last_data = loop.time()
                positions = [await consumer.position(tp) for tp in tps]
                reached = all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True))
                if reached and loop.time() - last_data >= self.quiet:
                    return Restored(out, applied, forwarded, aggregates)
        finally:
            await consumer.stop()
