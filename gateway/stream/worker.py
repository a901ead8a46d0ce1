"""Starting a worker (``gateway run``): check the configuration, wait for the broker,
create the topics with the intended partitions, then run the faust app until stopped."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Literal

import faust

from gateway.kafka.admin import ensure_topics, wait_for_broker
from gateway.runtime import Core, build_core
from gateway.settings import Settings
from gateway.stream.aggregation import aggregate_specs, aggregates_topic
from gateway.stream.app import create_app
from gateway.stream.consent_store import changelog_topic
from gateway.stream.protocol import BatchProtocol

Role = Literal["all", "gateway", "ledger"]

log = logging.getLogger("gateway.stream")


def required_topics(settings: Settings, core: Core | None) -> dict[str, int]:
    n = settings.partitions
    topics = {
        settings.input_topic: n,
        # Co-partitioned with the input (same count): a subject partition's events from
        # either are decided by the worker holding that partition number.
        settings.subjects_topic: n,
        settings.disclosure_topic: n,
        settings.dead_letter_topic: n,
        changelog_topic(settings): n,
    }
    if core is not None:
        for agent in core.policy.agents.values():
            topics[agent.topic] = n
        if aggregate_specs(core.policy):
            # One partition: every partition's partials meet in one order, read by one
            # combiner (gateway.stream.aggregation).
            topics[aggregates_topic(settings)] = 1
    return topics


def prepare(settings: Settings, role: Role = "all") -> tuple[Core | None, dict[str, int]]:
    """Everything that can fail at start-up, before faust starts: policy, keys, broker,
    topics. Raises a GatewayError naming the problem."""
    # Every role needs the core: the gateway decides, the sink seals erasure notices.
    core = build_core(settings)
    if not settings.bootstrap_servers:
        from gateway.errors import ConfigError

        raise ConfigError(
            "no Kafka broker configured: set GATEWAY_BOOTSTRAP_SERVERS="
            "host:port (or run `gateway demo` for an embedded one)"
        )
    wait_for_broker(settings.bootstrap_servers, timeout=120)
    topics = required_topics(settings, core)
    # The consent changelog keeps only each subject's latest state (compaction).
    ensure_topics(
        settings.bootstrap_servers,
        topics,
        settings.replication_factor,
        configs={
            changelog_topic(settings): {"cleanup.policy": "compact"},
            # The latest partial, heartbeat and emission per key is all that counts.
            aggregates_topic(settings): {"cleanup.policy": "compact"},
        },
    )
    return core, topics


def run(
    settings: Settings,
    role: Role = "all",
    loglevel: str = "info",
    *,
    protocol: type[BatchProtocol[Any]] = BatchProtocol,
) -> None:
    """Start a worker and run it until it is stopped. ``protocol``: the batch protocol
    class (tests substitute a deliberately faulty one)."""
    core, topics = prepare(settings, role)
    app = create_app(
        settings,
        core,
        gateway=role in ("all", "gateway"),
        ledger=role in ("all", "ledger"),
        protocol=protocol,
    )
    log.info("starting %s worker on %s (%d topics)", role, settings.bootstrap_servers, len(topics))
    worker = StoppingWorker(
        app,
        stop_timeout=settings.stop_timeout_seconds,
        loglevel=loglevel,
        quiet=True,
        override_logging=True,
    )
    worker.execute_from_commandline()


class StoppingWorker(faust.Worker):
    """faust's worker, whose stop ends the process within ``stop_timeout`` seconds.

    faust's shutdown waits for the broker at several steps (the producer's flush, the last
    offset commit, the consumer leaving its group), each retrying for as long as the broker
    is away: with it away (found with the broker stopped under a backlog), a worker told to
    stop never did. The first stop signal starts a timer; when it runs out, the process
    exits (code 1) with an error saying why. That loses nothing: what the broker had not
    acknowledged belongs to batches whose input was not acknowledged either."""

    def __init__(self, *args: Any, stop_timeout: float, **kwargs: Any):
        self._stop_timeout = stop_timeout
        self._deadline: threading.Timer | None = None
        super().__init__(*args, **kwargs)

    def _schedule_shutdown(self, sig: signal.Signals) -> None:
        if self._deadline is None:
            self._deadline = threading.Timer(self._stop_timeout, _stop_now, (self._stop_timeout,))
            self._deadline.daemon = True
            self._deadline.start()
        super()._schedule_shutdown(sig)


def _stop_now(seconds: float) -> None:
    log.error(
        "stopping took longer than %.0f s (GATEWAY_STOP_TIMEOUT_SECONDS): the shutdown waits "
        "for a broker that does not answer; exiting now. Nothing is lost: input not yet "
        "acknowledged is read and decided again (same ids) by whoever takes the partitions",
        seconds,
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)
