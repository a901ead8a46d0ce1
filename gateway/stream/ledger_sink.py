"""The ledger sink: the disclosure topic into the disclosure log store.

Its work per record is a database write, so it stays an ordinary faust agent taking the
topic in batches: records are appended per shard (the disclosure topic's partition), a
record already in the store counts as a duplicate (a replay after a restart) and is not
appended again, and a message that is not a record is counted and skipped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import faust

from gateway.records import DecisionRecord
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics

log = logging.getLogger("gateway.stream")


def add_ledger_sink(
    app: faust.App, settings: Settings, core: Core | None, stats: dict[str, int]
) -> None:
    """Append the disclosure topic's records to the disclosure log store, and sign a
    checkpoint when caught up (at most every 2 s) and every 10 s."""
    from gateway.keys import load_signing_key
    from gateway.ledger import open_store

    signer = core.signing_key if core is not None else load_signing_key(settings.signing_key_path)
    store = open_store(
        settings.ledger_url,
        signer=signer,
        checkpoint_every=settings.checkpoint_every,
        origin=settings.log_origin,
    )
    source = app.topic(
        settings.disclosure_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    @app.agent(source, name="ledger-sink")
    async def ledger_agent(stream: faust.StreamT) -> None:
        # faust's stream interface does not declare noack_take; its Stream has it.
        async for events in cast(faust.Stream, stream).noack_take(1000, within=0.05):
            by_shard: dict[int, list[DecisionRecord]] = {}
            for e in events:
                try:
                    rec = DecisionRecord.from_json(e.value)
                except (ValueError, TypeError):
                    # Not a record (a stray producer): counted and skipped, never crashes
                    # the sink; its content is not logged.
                    metrics.LEDGER_MALFORMED.inc()
                    log.warning(
                        "skipped a malformed message on the disclosure topic at "
                        "partition %d offset %d",
                        e.message.partition,
                        e.message.offset,
                    )
                    continue
                by_shard.setdefault(e.message.partition, []).append(rec)
            for shard, records in sorted(by_shard.items()):
                # The store is synchronous (SQLAlchemy): keep the event loop free.
                result = await asyncio.to_thread(store.append, records, shard)
                dup = len(result.duplicates)
                metrics.LEDGER_DUPLICATES.inc(dup)
                metrics.LEDGER_APPENDED.inc(len(records) - dup)
                stats["ledger_appended"] += len(records) - dup
                stats["ledger_seen"] += len(records)
            for e in events:
                await stream.ack(e)
            # Caught up (a short batch): sign a checkpoint over what is in, at most every
            # couple of seconds, so a quiet log is never long without one.
            loop_time = asyncio.get_running_loop().time()
            if len(events) < 1000 and loop_time - last_checkpoint[0] > 2.0:
                last_checkpoint[0] = loop_time
                await asyncio.to_thread(store.checkpoint)

    last_checkpoint = [0.0]

    @app.timer(interval=10.0)
    async def checkpoint() -> None:
        await asyncio.to_thread(store.checkpoint)
