"""The gateway's core alone: ``Pipeline.process`` in this process, no Kafka, no faust.

This is the most one worker could do if consuming, producing and faust cost nothing, so
it bounds the worker's throughput from above. Each stage is also timed on its own, by
replaying the exact arguments the pipeline passed it (captured in an untimed pass), so
the per-stage figures carry no profiler or wrapper overhead:

* ``parse`` -- ``parse_event``: JSON, schema validation, the JSON-ready body;
* ``decide`` -- ``Engine.decide`` for every subscribed agent (plans, transforms);
* ``seal`` -- ``Sealer.seal`` for every disclosed payload (AES-256-GCM, wrapped keys);
* ``other`` -- the rest of ``process``: consent state, ids, the agent payload's JSON,
  records, digests;
* ``record_json`` -- ``DecisionRecord.to_json`` (done when a batch's records are logged, outside
  ``process``; listed so the whole per-event cost of the core is in one table);
* ``verify`` -- the publisher's signature (``PublisherRegistry.verify``), with the headers
  ``sign`` gives each event; also outside ``process`` here (which is timed unverified, so
  that the figures compare with earlier runs), and in the worker part of admission. Per
  publisher scheme too: ``verify_ed25519``, ``verify_hmac-sha256``; and
  ``verify_threads``: the same checks as a worker makes them, a batch at a time on its
  ``GATEWAY_VERIFY_THREADS`` threads (:class:`~gateway.stream.signatures.SignatureChecks`),
  wall time per event (what the worker's decide phase waits for, with cores to spare);
* ``route`` -- ``subject_partition`` of each event's customer id: the worker's routing
  decision at admission (the hop itself, for events on another partition, is Kafka work:
  the throughput phase's re-routed row measures it); outside ``process``;
* ``aggregate`` -- what the worker does with ``EventResult.contributions`` after each
  decided event: ``AggregateBatch.event`` (gateway.stream.aggregation) -- every aggregate
  agent's watermark advanced, the event's contributions added to its subject
  partition's windows -- on fresh windows each round, in batches of
  ``AGGREGATE_BATCH`` events as the worker's; outside ``process``. The partials'
  JSON and MACs are per batch (steps 5 and 6), not timed here.

The stages above ``route`` are defined as they were before it, so their figures compare
with earlier runs (``other`` and ``bound`` do not include route, aggregate or verify).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gateway.aggregates import Aggregator, Contribution
from gateway.consent import ConsentState
from gateway.events import parse_event
from gateway.policy import AggregateSpec
from gateway.records import DecisionRecord
from gateway.routing import subject_partition
from gateway.runtime import Core
from gateway.stream.aggregation import AggregateBatch, WorkerAggregation, aggregate_specs
from gateway.stream.signatures import SignatureChecks

# Events per AggregateBatch in the aggregate stage: about the worker's batches at full
# rate (BENCHMARKS.md: 476-490).
AGGREGATE_BATCH = 500
# The batch size in ``verify_threads``: about the worker's batches at full rate.
VERIFY_BATCH = 200


class _FreshWindows(WorkerAggregation):
    """The worker's per-partition aggregators, empty: no consent store, no changelog to
    restore from -- what ``AggregateBatch.event`` feeds, and nothing else."""

    def __init__(self, specs: dict[str, AggregateSpec]):  # no super(): no store, no topic
        self.specs = specs
        self._fresh: dict[int, dict[str, Aggregator]] = {}

    def aggregators(self, partition: int) -> dict[str, Aggregator]:
        got = self._fresh.get(partition)
        if got is None:
            got = self._fresh[partition] = {
                agent: Aggregator(spec, agent, partition) for agent, spec in self.specs.items()
            }
        return got


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(
    core: Core,
    raws: Sequence[bytes],
    *,
    rounds: int = 3,
    sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
) -> dict[str, Any]:
    """Per-event costs (µs) of the core over ``raws``; the best of ``rounds`` each (the
    least disturbed by whatever else the machine does). ``sign``: each event's publisher
    headers, to time the signature check."""
    pipeline, engine = core.pipeline, core.engine
    n = len(raws)

    def process_all() -> None:
        states: dict[str, ConsentState] = {}
        for raw in raws:
            pipeline.process(raw, states, verify=False)

    process_all()  # warm: plans compiled, caches filled, data keys made

    # Capture every stage's arguments in one untimed pass.
    decide_args: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    seal_args: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = []
    records: list[DecisionRecord] = []
    # Per decided event: (subject partition, occurred_at, contributions), as the worker
    # hands them to its AggregateBatch.
    decided: list[tuple[int, datetime, list[Contribution]]] = []
    customers: list[str] = []
    partitions = core.settings.partitions
    dead_letters = erasure_requests = 0
    real_decide = engine.decide
    real_seals = {name: s.seal for name, s in pipeline.sealers.items()}

    def capture_decide(*args: Any, **kwargs: Any) -> Any:
        decide_args.append((args, kwargs))
        return real_decide(*args, **kwargs)

    def capturing_seal(name: str) -> Callable[..., Any]:
        def seal(*args: Any, **kwargs: Any) -> Any:
            seal_args.append((real_seals[name], args, kwargs))
            return real_seals[name](*args, **kwargs)

        return seal

    # Instrumentation: the core phase wraps the real methods to time each stage.
    engine.decide = capture_decide  # type: ignore[method-assign]
    for name, sealer in pipeline.sealers.items():
        sealer.seal = capturing_seal(name)  # type: ignore[method-assign]
    try:
        states: dict[str, ConsentState] = {}
        messages = 0
        for raw in raws:
            out = pipeline.process(raw, states, verify=False)
            records.extend(out.records)
            messages += len(out.messages)
            dead_letters += out.dead_letter is not None
            erasure_requests += out.erasure_request is not None
            if out.event is not None and out.dead_letter is None:
                customers.append(out.event.customer_id)
                part = subject_partition(out.event.customer_id, partitions)
                decided.append((part, out.event.occurred_at, out.contributions))
    finally:
        del engine.decide
        for sealer in pipeline.sealers.values():
            del sealer.seal

    def parse_all() -> None:
        for raw in raws:
            parse_event(raw)

    def decide_all() -> None:
        for args, kwargs in decide_args:
            real_decide(*args, **kwargs)

    def seal_all() -> None:
        for fn, args, kwargs in seal_args:
            fn(*args, **kwargs)

    def record_json_all() -> None:
        for r in records:
            r.to_json()

    def route_all() -> None:
        for customer_id in customers:
            subject_partition(customer_id, partitions)

    specs = aggregate_specs(core.policy)

    def aggregate_all() -> None:
        owner = _FreshWindows(specs)
        for i in range(0, len(decided), AGGREGATE_BATCH):
            batch = AggregateBatch(owner)
            for part, occurred_at, contributions in decided[i : i + AGGREGATE_BATCH]:
                batch.event(part, occurred_at, contributions)

    stages = {
        "process": process_all,
        "parse": parse_all,
        "decide": decide_all,
        "seal": seal_all,
        "record_json": record_json_all,
        "route": route_all,
        "aggregate": aggregate_all,
    }
    Signed = list[tuple[bytes, list[tuple[str, bytes]]]]
    registry = pipeline.publishers

    def verifying(items: Signed) -> Callable[[], None]:
        def verify_all() -> None:
            for raw, headers in items:
                registry.verify(raw, headers)

        return verify_all

    schemes: dict[str, Signed] = {}
    if sign is not None:
        signed: Signed = [(raw, sign(raw)) for raw in raws]
        for raw, headers in signed:
            schemes.setdefault(registry.verify(raw, headers).scheme, []).append((raw, headers))
        stages["verify"] = verifying(signed)
        checks = SignatureChecks(pipeline, core.settings.verify_threads)

        def verify_threads() -> None:
            for i in range(0, len(signed), VERIFY_BATCH):
                checks.check(signed[i : i + VERIFY_BATCH])

        stages["verify_threads"] = verify_threads
    best = {name: min(_timed(fn) for _ in range(rounds)) for name, fn in stages.items()}
    if sign is not None:
        checks.close()
    us = {name: seconds / n * 1e6 for name, seconds in best.items()}
    for scheme, items in sorted(schemes.items()):
        took = min(_timed(verifying(items)) for _ in range(rounds))
        us[f"verify_{scheme}"] = took / len(items) * 1e6
    us["other"] = max(0.0, us["process"] - us["parse"] - us["decide"] - us["seal"])
    total = us["process"] + us["record_json"]
    return {
        "events": n,
        "decisions_per_event": len(decide_args) / n,
        "messages_per_event": messages / n,
        "records_per_event": len(records) / n,
        # Everything the gateway logs or discloses per event (records, erasure requests,
        # agent messages, dead letters): its output fan-out, against the bare loop's one.
        "outputs_per_event": (len(records) + erasure_requests + messages + dead_letters) / n,
        "contributions_per_event": sum(len(c) for _, _, c in decided) / n,
        "aggregate_agents": len(specs),
        "us_per_event": us,
        "events_per_s": 1e6 / us["process"],
        # The core's whole per-event cost, record JSON included: what a
        # worker spends before any Kafka or faust work.
        "bound_events_per_s": 1e6 / total,
    }
