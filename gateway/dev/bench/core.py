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
  ``process``; listed so the whole per-event cost of the core is in one table).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from gateway.consent import ConsentState
from gateway.events import parse_event
from gateway.records import DecisionRecord
from gateway.runtime import Core


def _timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(core: Core, raws: Sequence[bytes], *, rounds: int = 3) -> dict[str, Any]:
    """Per-event costs (µs) of the core over ``raws``; the best of ``rounds`` each (the
    least disturbed by whatever else the machine does)."""
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

    stages = {
        "process": process_all,
        "parse": parse_all,
        "decide": decide_all,
        "seal": seal_all,
        "record_json": record_json_all,
    }
    best = {name: min(_timed(fn) for _ in range(rounds)) for name, fn in stages.items()}
    us = {name: seconds / n * 1e6 for name, seconds in best.items()}
    us["other"] = max(0.0, us["process"] - us["parse"] - us["decide"] - us["seal"])
    total = us["process"] + us["record_json"]
    return {
        "events": n,
        "decisions_per_event": len(decide_args) / n,
        "messages_per_event": messages / n,
        "records_per_event": len(records) / n,
        "us_per_event": us,
        "events_per_s": 1e6 / us["process"],
        # The core's whole per-event cost, record JSON included: what a
        # worker spends before any Kafka or faust work.
        "bound_events_per_s": 1e6 / total,
    }
