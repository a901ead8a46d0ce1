"""Prometheus metrics. Labels are agent names, outcomes and reason codes only: never a
customer id, an event value or anything else personal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_IN = Counter("gateway_events_in_total", "Input events read", registry=REGISTRY)
FORWARDED = Counter(
    "gateway_events_forwarded_total",
    "Input events re-routed to their customer's partition (the re-partition topic)",
    registry=REGISTRY,
)
CHANGELOG_REJECTED = Counter(
    "gateway_changelog_rejected_total",
    "Consent changelog entries ignored on restore: no valid worker MAC (forged)",
    registry=REGISTRY,
)
EVENTS_DONE = Counter(
    "gateway_events_processed_total",
    "Input events fully processed (outputs acknowledged, input acknowledged)",
    registry=REGISTRY,
)
MESSAGES_OUT = Counter(
    "gateway_agent_messages_total",
    "Sealed messages disclosed to agents",
    ["agent", "kind"],
    registry=REGISTRY,
)
WITHHELD = Counter(
    "gateway_withheld_total",
    "Decisions that withheld an event from an agent",
    ["agent", "reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "gateway_dead_letters_total", "Events dead-lettered", ["reason"], registry=REGISTRY
)
RECORDS = Counter(
    "gateway_records_total", "Decision records written to the disclosure topic", registry=REGISTRY
)
SEND_RETRIES = Counter(
    "gateway_send_retries_total", "Batch output retries (broker trouble)", registry=REGISTRY
)
BATCH_SECONDS = Histogram(
    "gateway_batch_seconds",
    "Time to process and acknowledge one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
BATCH_PHASE_SECONDS = Histogram(
    "gateway_batch_phase_seconds",
    "Time one batch spends in each phase: decide (CPU), log "
    "(records acknowledged), disclose (agent messages acknowledged), changelog (consent "
    "state acknowledged)",
    ["phase"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY,
)
DECIDE_CPU_SECONDS = Counter(
    "gateway_batch_decide_cpu_seconds",
    "CPU time the worker's thread spent deciding batches (step 3); against the decide"
    " phase's wall time, the share it waited for a CPU",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "gateway_batch_events",
    "Events per batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000),
    registry=REGISTRY,
)
LAG = Gauge(
    "gateway_input_lag",
    "Input events not yet processed, per partition",
    ["partition"],
    registry=REGISTRY,
)
INPUT_PAUSED = Gauge(
    "gateway_input_paused",
    "1 while an input partition is paused because it ran ahead in event time of the"
    " slowest partition behind on a backlog (aggregate windows; see the README)",
    ["partition"],
    registry=REGISTRY,
)
LEDGER_APPENDED = Counter(
    "gateway_ledger_records_appended_total",
    "Records appended to the disclosure log store",
    registry=REGISTRY,
)
LEDGER_MALFORMED = Counter(
    "gateway_ledger_malformed_total",
    "Messages on the disclosure topic that are not records (quarantined, reason malformed)",
    registry=REGISTRY,
)
LEDGER_DUPLICATES = Counter(
    "gateway_ledger_duplicates_total",
    "Records already in the store (replays after a restart)",
    registry=REGISTRY,
)
LEDGER_QUARANTINED = Counter(
    "gateway_ledger_quarantined_total",
    "Messages on the disclosure topic the sink quarantined instead of logging, by reason:"
    " unsigned or bad_mac (not written by a worker), malformed (not a record), unstorable"
    " (the store rejected the record)",
    ["reason"],
    registry=REGISTRY,
)
LEDGER_RETRIES = Counter(
    "gateway_ledger_retries_total",
    "Batches the sink retried because the store could not take them (down, locked, or the"
    " log altered behind the gateway)",
    registry=REGISTRY,
)
SINK_LAG = Gauge(
    "gateway_ledger_sink_lag",
    "Messages on the disclosure topic the sink has not dealt with yet, per partition",
    ["partition"],
    registry=REGISTRY,
)
SINK_STALLED = Gauge(
    "gateway_ledger_sink_stalled",
    "1 while the sink has messages waiting and made no progress for GATEWAY_SINK_STALL_SECONDS",
    registry=REGISTRY,
)

AGGREGATES_EMITTED = Counter(
    "gateway_aggregates_emitted_total",
    "Aggregate tables (window revisions) emitted to aggregate-only agents",
    ["agent"],
    registry=REGISTRY,
)
AGGREGATE_REJECTED = Counter(
    "gateway_aggregate_rejected_total",
    "Messages on the aggregates topic ignored by the combiner: no valid worker MAC (forged)",
    registry=REGISTRY,
)
AGGREGATE_OPEN_WINDOWS = Gauge(
    "gateway_aggregate_open_windows",
    "Aggregate windows held open in this worker: by its subject partitions' aggregators"
    " (held='partitions', window x partition) and by the combiner (held='combiner'). Bounded"
    " by the windows' sizes and grace; steady growth means a watermark is not advancing",
    ["agent", "held"],
    registry=REGISTRY,
)
AGGREGATE_PARTIAL_BYTES = Gauge(
    "gateway_aggregate_partial_bytes",
    "The largest aggregate partial (one window of one subject partition: a full snapshot"
    " of its event and customer keys) the latest batch writing one wrote. It grows as its"
    " window fills;"
    " past the producer's 2 MiB request limit it cannot be written and the batch fails",
    ["agent"],
    registry=REGISTRY,
)
AGGREGATE_WATERMARK = Gauge(
    "gateway_aggregate_watermark_seconds",
    "Event time (epoch seconds) each subject partition reported to the combiner: a window"
    " closes when the lowest of them passes its end + grace, so the lowest names the"
    " partition holding windows open",
    ["agent", "partition"],
    registry=REGISTRY,
)
AGGREGATE_IGNORED = Counter(
    "gateway_aggregate_ignored_total",
    "Partials for windows the combiner had already closed (a partition counted as idle"
    " resumed with events for them)",
    ["agent"],
    registry=REGISTRY,
)


class _GcCollector(Collector):
    """The cyclic collector's time and runs, per generation, as counted by :func:`gc_timed`
    (read at scrape time: the GC callback itself takes no lock)."""

    def collect(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily(
            "gateway_gc_seconds",
            "Time the worker spent in Python's cyclic garbage collector, per generation"
            " (the collector stops everything else in the process while it runs)",
            labels=["generation"],
        )
        runs = CounterMetricFamily(
            "gateway_gc_collections",
            "Cyclic garbage collections, per generation",
            labels=["generation"],
        )
        for generation, (n, took) in enumerate(GC_TIME):
            seconds.add_metric([str(generation)], took)
            runs.add_metric([str(generation)], n)
        yield seconds
        yield runs


# Per generation: [collections, seconds]; written by gc_timed only.
GC_TIME: list[list[float]] = [[0, 0.0], [0, 0.0], [0, 0.0]]
_gc_started = 0.0


def gc_timed(phase: str, info: dict[str, Any]) -> None:
    """A ``gc.callbacks`` entry: counts each collection and its time."""
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    got = GC_TIME[info["generation"]]
    got[0] += 1
    got[1] += time.perf_counter() - _gc_started


REGISTRY.register(_GcCollector())
