"""Sending a batch's outputs: every message acknowledged by the broker, retried until it is.

:func:`send_acknowledged` is the one retry loop: it sends, waits for every acknowledgement,
and sends again what was not acknowledged, with backoff, for as long as the broker is
away (the batch is held meanwhile; a duplicate from a retry carries the same id and is
recognised downstream). :class:`BatchSender` sends that way on faust's aiokafka producer:
it is the protocol's :class:`~gateway.stream.protocol.Sender`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner

from gateway.stream import metrics
from gateway.stream.protocol import Item

log = logging.getLogger("gateway.stream")

# One attempt at sending ``items`` (to the given partitions, or to the partition of each
# key when None): per item, None once the broker acknowledged it, or the error.
Partitions = Sequence[int | None] | None
Attempt = Callable[[Sequence[Item], Partitions], Awaitable[list[BaseException | None]]]

FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 5.0


async def send_acknowledged(
    attempt: Attempt,
    items: Sequence[Item],
    partitions: Sequence[int | None] | None = None,
    *,
    what: str = "messages",
    first_delay: float = FIRST_RETRY_DELAY,
    max_delay: float = MAX_RETRY_DELAY,
) -> None:
    """Send ``items`` and return once the broker acknowledged every one of them.

    Items not acknowledged are sent again, alone, after a delay that doubles from
    ``first_delay`` up to ``max_delay``. ``what`` names the items in the warning logged
    for each retry (never their content)."""
    delay = first_delay
    while items:
        results = await attempt(items, partitions)
        failed = [i for i, r in enumerate(results) if r is not None]
        if not failed:
            return
        metrics.SEND_RETRIES.inc()
        log.warning(
            "broker did not acknowledge %d of %d %s (%s); retrying in %.2fs",
            len(failed),
            len(items),
            what,
            type(results[failed[0]]).__name__,
            delay,
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
        items = [items[i] for i in failed]
        if partitions is not None:
            partitions = [partitions[i] for i in failed]


class BatchSender:
    """Sends many messages at once on faust's aiokafka producer, as hand-built batches
    (``create_batch``/``send_batch``) per topic partition: aiokafka's ``send`` costs tens
    of µs of Python per message (a future, partitioning, accumulator bookkeeping, and
    with linger 0 often a produce request of its own); appending to a batch costs a few.

    Partitions are chosen as ``send`` chooses them (murmur2 of the key over the topic's
    partitions), so no message lands anywhere else than it did; keys repeat per subject,
    so the choice is cached (bounded).
    """

    _CACHE_MAX = 200_000

    def __init__(self, app: faust.App):
        self.app = app
        self._partitioner = DefaultPartitioner()
        self._partition_of: dict[tuple[str, int, bytes], int] = {}

    async def send(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None, *, what: str
    ) -> None:
        """Send ``items`` until the broker acknowledged them all (see
        :func:`send_acknowledged`)."""
        await send_acknowledged(self.attempt, items, partitions, what=what)

    async def attempt(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None
    ) -> list[BaseException | None]:
        """Send ``items`` once; per item, None once the broker acknowledged it, or the
        error."""
        # faust's producer type does not declare the aiokafka producer it wraps.
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        groups = await self._by_partition(producer, items, partitions)
        sent: list[tuple[Any, list[int]]] = []
        for (topic, p), idxs in groups.items():
            batch = producer.create_batch()
            in_batch: list[int] = []
            for i in idxs:
                _, key, value, headers = items[i]
                if (
                    batch.append(key=key, value=value, timestamp=None, headers=headers or [])
                    is None
                ):
                    if in_batch:
                        batch.close()
                        sent.append(
                            (await producer.send_batch(batch, topic, partition=p), in_batch)
                        )
                        batch, in_batch = producer.create_batch(), []
                    if (
                        batch.append(key=key, value=value, timestamp=None, headers=headers or [])
                        is None
                    ):
                        # Larger than a whole batch: the ordinary send takes it alone.
                        sent.append(
                            (
                                await producer.send(
                                    topic, value, key=key, partition=p, headers=headers
                                ),
                                [i],
                            )
                        )
                        continue
                in_batch.append(i)
            if in_batch:
                batch.close()
                sent.append((await producer.send_batch(batch, topic, partition=p), in_batch))
        results: list[BaseException | None] = [None] * len(items)
        outcomes = await asyncio.gather(*(f for f, _ in sent), return_exceptions=True)
        for (_, idxs), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                for i in idxs:
                    results[i] = outcome
        return results

    async def _by_partition(
        self, producer: Any, items: Sequence[Item], partitions: Sequence[int | None] | None
    ) -> dict[tuple[str, int], list[int]]:
        """The indexes of ``items`` per (topic, partition) they go to."""
        topic_parts: dict[str, list[int]] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        cache = self._partition_of
        for i, (topic, key, _value, _headers) in enumerate(items):
            given = partitions[i] if partitions is not None else None
            if given is not None:
                p = given
            else:
                parts = topic_parts.get(topic)
                if parts is None:
                    parts = topic_parts[topic] = list(await producer.partitions_for(topic))
                if key is None:
                    p = self._partitioner(key, parts, parts)
                else:
                    ck = (topic, len(parts), key)
                    cached = cache.get(ck)
                    if cached is None:
                        cached = self._partitioner(key, parts, parts)
                        if len(cache) >= self._CACHE_MAX:
                            cache.clear()  # bounded: memory stays flat
                        cache[ck] = cached
                    p = cached
            groups.setdefault((topic, p), []).append(i)
        return groups
