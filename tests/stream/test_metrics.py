"""The worker's own account of its garbage collector on /metrics."""

from __future__ import annotations

import gc
import re

from prometheus_client import generate_latest

from gateway.stream import app, metrics


def gc_seconds() -> dict[str, float]:
    text = generate_latest(metrics.REGISTRY).decode()
    return {
        g: float(v)
        for g, v in re.findall(r'^gateway_gc_seconds_total\{generation="(\d)"\} (\S+)$', text, re.M)
    }


def test_the_worker_counts_its_collections_per_generation() -> None:
    before_callbacks = list(gc.callbacks)
    thresholds = gc.get_threshold()
    try:
        app._tune_gc()
        app._tune_gc()  # once is enough: a second call adds no second counter
        assert gc.callbacks.count(metrics.gc_timed) == 1
        before = gc_seconds()
        garbage = [[i] for i in range(100_000)]
        del garbage
        gc.collect()
        after = gc_seconds()
        assert set(after) == {"0", "1", "2"}
        assert after["2"] > before.get("2", 0.0)
    finally:
        gc.callbacks[:] = before_callbacks
        gc.set_threshold(*thresholds)
        gc.unfreeze()
