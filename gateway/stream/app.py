"""The worker's faust app: the gateway role (input topic -> consent table + policy core
-> disclosure topic, then agent topics, through the batch lane), the ledger role
(disclosure topic -> disclosure log store), and the health and metrics pages.

Health pages (JSON; for probes and for people):

* ``/health/live`` -- the process is up and its event loop responsive (a 1 s tick that
  came on time recently) and faust has not crashed; 503 otherwise. Restart when it fails.
* ``/health/ready`` -- the worker does its job: it joined the consumer group and got its
  partitions (no rebalance under way); for the gateway role, the consent state of every
  assigned input partition is restored; for the ledger role, the sink is consuming and not
  stalled (records waiting on the disclosure topic and no progress for
  GATEWAY_SINK_STALL_SECONDS). 503 otherwise. Route work by it, do not restart on it.
* ``/health`` -- the summary both views come from, plus the progress counters and the
  sink's lag. 503 only when the worker is not live or the sink is stalled (the states a
  restart or an operator must fix); while the worker is still starting it answers 200 with
  ``"status": "starting"``, so scripts that wait for the page to answer keep working.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Final

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.kafka.clients import PRODUCER_MAX_REQUEST_BYTES
from gateway.runtime import Core
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.consent_store import ConsentStore
from gateway.stream.lane import GatewayApp, add_gateway_lane
from gateway.stream.ledger_sink import SinkProgress, add_ledger_sink
from gateway.stream.protocol import BatchProtocol

# Python's cyclic GC runs after every 700 net container allocations; a batch of events
# allocates hundreds of thousands, nearly all freed by reference counting, and each
# collection also walks the batch still in flight and faust's long-lived objects: about
# a tenth of a worker's time went to collections that found next to nothing. Fewer,
# larger young collections, and start-up objects frozen out of the collector's view.
_GC_THRESHOLDS = (20_000, 50, 100)


# The event loop counts as unresponsive when its 1 s tick is this late.
LIVE_TIMEOUT: Final = 10.0


def _tune_gc() -> None:
    gc.set_threshold(*_GC_THRESHOLDS)
    gc.freeze()
    # Counted on /metrics: whether the tuning still pays is read off a running worker
    # (`gateway bench` reports the collector's time per event).
    if metrics.gc_timed not in gc.callbacks:
        gc.callbacks.append(metrics.gc_timed)


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
        producer_max_request_size=PRODUCER_MAX_REQUEST_BYTES,
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
    stats: dict[str, int] = {
        "processed": 0,
        "ledger_appended": 0,
        "ledger_seen": 0,
        "ledger_quarantined": 0,
    }
    health = Health(app, settings, gateway=gateway, ledger=ledger, stats=stats)

    @app.timer(interval=1.0)
    async def _tick() -> None:
        health.tick()

    @app.on_partitions_assigned.connect
    async def _assigned(*args: Any, **kwargs: Any) -> None:
        health.joined = True

    @app.page("/health")
    async def health_page(web: Any, request: Any) -> Any:
        body = health.summary()
        ok = body["live"] and not (body.get("sink") or {}).get("stalled", False)
        return web.json(body, status=200 if ok else 503)

    @app.page("/health/live")
    async def live_page(web: Any, request: Any) -> Any:
        ok, body = health.live()
        return web.json(body, status=200 if ok else 503)

    @app.page("/health/ready")
    async def ready_page(web: Any, request: Any) -> Any:
        ok, body = health.ready()
        return web.json(body, status=200 if ok else 503)

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
        health.consent = add_gateway_lane(app, settings, core, stats, protocol)
    if ledger:
        health.sink = add_ledger_sink(app, settings, core, stats)
    return app


class Health:
    """What the health pages report (see the module's docstring)."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        *,
        gateway: bool,
        ledger: bool,
        stats: dict[str, int],
    ):
        self.app = app
        self.input_topic = settings.input_topic
        self.roles = [r for r, on in (("gateway", gateway), ("ledger", ledger)) if on]
        self.stats = stats
        self.consent: ConsentStore | None = None
        self.sink: SinkProgress | None = None
        # Set by the first partition assignment: the group is joined.
        self.joined = False
        self.started = time.monotonic()
        self.last_tick = self.started
        self.loop_delay = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if self.last_tick > self.started:
            # How much later than asked the 1 s timer ran: time the loop was blocked.
            self.loop_delay = max(0.0, now - self.last_tick - 1.0)
        self.last_tick = now

    def live(self) -> tuple[bool, dict[str, Any]]:
        since = time.monotonic() - self.last_tick
        crashed = bool(getattr(self.app, "crashed", False))
        ok = not crashed and since < LIVE_TIMEOUT
        return ok, {
            "live": ok,
            "crashed": crashed,
            "seconds_since_tick": round(since, 2),
            "loop_delay_seconds": round(self.loop_delay, 3),
        }

    def _assigned(self, topic: str) -> list[int] | None:
        try:
            return sorted(
                tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic
            )
        except Exception:  # the consumer has not started
            return None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        live, _ = self.live()
        rebalancing = bool(getattr(self.app, "rebalancing", False))
        checks: dict[str, Any] = {
            "live": live,
            "group_joined": self.joined,
            "rebalancing": rebalancing,
        }
        ok = live and self.joined and not rebalancing
        if "gateway" in self.roles:
            parts = self._assigned(self.input_topic)
            restored = parts is not None and self.consent is not None and self.consent.ready(parts)
            checks["input_partitions"] = parts
            checks["consent_restored"] = restored
            ok = ok and restored
        if self.sink is not None:
            checks["disclosure_partitions"] = self._assigned(self.sink.topic)
            checks["sink_consuming"] = self.joined and not self.sink.stalled
            checks["sink_stalled"] = self.sink.stalled
            ok = ok and not self.sink.stalled
        return ok, {"ready": ok, "roles": self.roles, "checks": checks}

    def summary(self) -> dict[str, Any]:
        live, live_view = self.live()
        ready, ready_view = self.ready()
        stalled = self.sink is not None and self.sink.stalled
        status = "down" if not live else "stalled" if stalled else "ok" if ready else "starting"
        out: dict[str, Any] = {
            "status": status,
            "live": live,
            "ready": ready,
            "roles": self.roles,
            **self.stats,
            "checks": ready_view["checks"],
            "loop_delay_seconds": live_view["loop_delay_seconds"],
        }
        if self.sink is not None:
            out["sink"] = self.sink.view()
        return out
