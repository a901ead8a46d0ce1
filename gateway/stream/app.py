"""The worker's faust app: the gateway role (input topic -> consent table + policy core
-> disclosure topic, then agent topics, through the batch lane), the ledger role
(disclosure topic -> disclosure log store), and the health and metrics pages.
"""

from __future__ import annotations

import gc
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.lane import GatewayApp, add_gateway_lane
from gateway.stream.ledger_sink import add_ledger_sink
from gateway.stream.protocol import BatchProtocol

# Python's cyclic GC runs after every 700 net container allocations; a batch of events
# allocates hundreds of thousands, nearly all freed by reference counting, and each
# collection also walks the batch still in flight and faust's long-lived objects: about
# a tenth of a worker's time went to collections that found next to nothing. Fewer,
# larger young collections, and start-up objects frozen out of the collector's view.
_GC_THRESHOLDS = (20_000, 50, 100)


def _tune_gc() -> None:
    gc.set_threshold(*_GC_THRESHOLDS)
    gc.freeze()


def create_app(
    settings: Settings,
    core: Core | None,
    *,
    gateway: bool = True,
    ledger: bool = True,
    protocol: type[BatchProtocol[Any]] = BatchProtocol,
) -> GatewayApp:
    """The worker's faust app: the ``gateway`` role (the input lane and the batch
    protocol, ``protocol``), the ``ledger`` role (the ledger sink), or both; and its
    health and metrics pages."""
    brokers = [f"kafka://{h.strip()}" for h in settings.bootstrap_servers.split(",")]
    app = GatewayApp(
        settings.app_id,
        broker=brokers,
        store="memory://",
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        # One batch per topic partition and phase (see BatchSender): aiokafka queues one
        # batch per partition at a time, so small batches would wait on each other.
        producer_max_batch_size=512 * 1024,
        producer_max_request_size=2 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        # faust fetches up to 4 MiB per partition; the lane holds a whole fetch until it
        # is processed, so with a backlog on every partition the worker's RSS jumped by
        # tens of MiB per fetch. 1 MiB is still thousands of events per partition.
        consumer_max_fetch_size=1024 * 1024,
        processing_guarantee="at_least_once",
        broker_commit_interval=1.0,
        # No faust tables (see consent_store): nothing for faust to recover.
        # A new group member gets its assignment after about half the session timeout on
        # some brokers (Tansu), and a killed worker's partitions move only after it: keep
        # it at the smallest value stock Kafka accepts (group.min.session.timeout.ms).
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        stream_wait_empty=False,
        # The web server serves health and metrics on loopback; faust's own table and
        # router views would expose consent state, so they are off.
        web_enabled=True,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_tables_enabled=False,
        web_router_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        logging_config=None,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    _tune_gc()

    @app.task
    async def _started() -> None:
        gc.freeze()  # what faust and the clients built while starting, too

    # Progress counters, for the health page.
    stats: dict[str, int] = {"processed": 0, "ledger_appended": 0, "ledger_seen": 0}

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "roles": [r for r, on in (("gateway", gateway), ("ledger", ledger)) if on],
                **stats,
            }
        )

    @app.page("/metrics")
    async def prometheus(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8.
        return web.bytes(
            generate_latest(metrics.REGISTRY),
            content_type=CONTENT_TYPE_LATEST.split(";")[0] + "; version=0.0.4",
        )

    if gateway:
        if core is None:
            raise ValueError("the gateway role needs the policy core")
        add_gateway_lane(app, settings, core, stats, protocol)
    if ledger:
        add_ledger_sink(app, settings, core, stats)
    return app
