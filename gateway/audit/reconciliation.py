"""The whole audit: replay the input, then compare; for a live deployment, read a
snapshot first and re-check until in-flight work has settled."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.audit.comparison import compare
from gateway.audit.expectation import expect
from gateway.audit.model import TopicMessage
from gateway.audit.report import ReconcileReport
from gateway.audit.snapshot import CONNECT_TIMEOUT, QUIET, READ_TIMEOUT, Snapshot, snapshot
from gateway.runtime import build_core

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline
    from gateway.settings import Settings


def reconcile(pipeline: Pipeline, inputs: Sequence[TopicMessage], **kw: Any) -> ReconcileReport:
    """:func:`expect` then :func:`compare` (keyword arguments as for ``compare``)."""
    kw.setdefault("policy_version", pipeline.engine.policy_version)
    return compare(expect(pipeline, inputs), **kw)


def reconcile_snapshot(pipeline: Pipeline, snap: Snapshot) -> ReconcileReport:
    """:func:`reconcile` of what :func:`~gateway.audit.snapshot.snapshot` read."""
    return reconcile(
        pipeline,
        snap.inputs,
        disclosures=snap.disclosures,
        ledger=snap.ledger,
        agent_messages=snap.agent_messages,
        dead_letters=snap.dead_letters,
        agent_topics=snap.agent_topics,
        offsets=snap.offsets,
    )


def reconcile_deployment(
    settings: Settings,
    *,
    pipeline: Pipeline | None = None,
    use_offsets: bool = True,
    read_timeout: float = READ_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    quiet: float = QUIET,
) -> ReconcileReport:
    """Reconcile the deployment ``settings`` describe (broker, topics, ledger, policy).

    The replay runs the core built from the same settings (policy file, keys), so it
    decides exactly as the workers do. ``use_offsets``, ``read_timeout``,
    ``connect_timeout`` and ``quiet`` are passed to :func:`~gateway.audit.snapshot.snapshot`.
    """
    if pipeline is None:
        pipeline = build_core(settings).pipeline
    topics = {name: a.topic for name, a in pipeline.policy.agents.items()}
    snap = snapshot(
        settings,
        topics,
        use_offsets=use_offsets,
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        quiet=quiet,
    )
    return reconcile_snapshot(pipeline, snap)


def reconcile_until_settled(
    run: Callable[[], ReconcileReport], wait: float, interval: float = 2.0, *, offsets: bool = True
) -> ReconcileReport:
    """Run ``run`` until nothing is pending, or ``wait`` seconds pass: a live deployment
    always has work in flight, and a sink that lags is not a loss.

    With committed ``offsets`` a gap is final (it concerns work the gateway had already
    committed), so only pending work is waited for; without them (every input counted as
    processed) a shortfall may still be in flight, so gaps are waited out too.
    """
    deadline = time.monotonic() + wait
    while True:
        rep = run()
        settled = not rep.pending and (offsets or rep.ok())
        if settled or time.monotonic() >= deadline:
            return rep
        time.sleep(interval)
