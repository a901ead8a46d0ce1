"""The consent table: each subject's consent state, kept in memory per input partition and
backed by a compacted changelog topic, keyed by customer id and co-partitioned with the
input (a state change is written to the changelog partition of the event that caused it).

On partition assignment the partition's state is restored by reading its changelog
partition to the end — by fetching until the broker has nothing more, not by trusting
ListOffsets, which some brokers (Tansu) under-report. faust's own table recovery never
completes against that broker (its recovery fetches receive no changelog events), which
is why the gateway restores the table itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.consent import ConsentState

log = logging.getLogger("gateway.stream")


class ConsentStore:
    def __init__(self, bootstrap_servers: str, changelog_topic: str, *, quiet: float = 0.5):
        self.bootstrap = bootstrap_servers
        self.topic = changelog_topic
        self.quiet = quiet
        self._parts: dict[int, dict[str, bytes]] = {}
        self._ready: dict[int, asyncio.Event] = {}

    # --- state ---------------------------------------------------------------------

    def get(self, partition: int, customer_id: str) -> ConsentState | None:
        raw = self._parts.get(partition, {}).get(customer_id)
        return ConsentState.from_dict(orjson.loads(raw)) if raw else None

    def set_local(self, partition: int, customer_id: str, value: bytes) -> None:
        self._parts.setdefault(partition, {})[customer_id] = value

    def size(self) -> int:
        return sum(len(p) for p in self._parts.values())

    # --- rebalancing ---------------------------------------------------------------

    def _event(self, partition: int) -> asyncio.Event:
        ev = self._ready.get(partition)
        if ev is None:
            ev = self._ready[partition] = asyncio.Event()
        return ev

    async def wait_ready(self, partitions: Iterable[int]) -> None:
        for p in set(partitions):
            await self._event(p).wait()

    def revoke(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._parts.pop(p, None)
            self._event(p).clear()

    async def restore(self, partitions: Iterable[int]) -> None:
        parts = sorted(set(partitions))
        if not parts:
            return
        for p in parts:
            self._event(p).clear()
        loaded = await self._read(parts)
        for p in parts:
            self._parts[p] = loaded.get(p, {})
            self._event(p).set()
        log.info("consent state restored for partitions %s (%d subjects)", parts,
                 sum(len(v) for v in loaded.values()))

    async def _read(self, parts: list[int]) -> dict[int, dict[str, bytes]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap.split(","),
                                    enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in parts]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            out: dict[int, dict[str, bytes]] = {p: {} for p in parts}
            loop = asyncio.get_running_loop()
            last_data = loop.time()
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                for tp, records in batch.items():
                    for m in records:
                        if m.key is None:
                            continue
                        key = m.key.decode()
                        if m.value is None:  # a tombstone
                            out[tp.partition].pop(key, None)
                        else:
                            out[tp.partition][key] = m.value
                if batch:
                    last_data = loop.time()
                positions = [await consumer.position(tp) for tp in tps]
                reached = all(pos >= end[tp] for pos, tp in zip(positions, tps, strict=True))
                if reached and loop.time() - last_data >= self.quiet:
                    return out
        finally:
            await consumer.stop()
