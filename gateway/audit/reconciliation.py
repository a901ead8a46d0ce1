"""The whole audit: admit the input, then compare; for a live deployment, read a
snapshot first and re-check until in-flight work has settled."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from gateway.audit.comparison import PENDING_DEADLINE, compare
from gateway.audit.expectation import expect
from gateway.audit.model import TopicMessage
from gateway.audit.report import ReconcileReport
from gateway.audit.snapshot import CONNECT_TIMEOUT, QUIET, READ_TIMEOUT, Snapshot, snapshot
from gateway.integrity import WorkerMac
from gateway.runtime import build_core

if TYPE_CHECKING:
    from gateway.pipeline import Pipeline
    from gateway.settings import Settings


def reconcile(pipeline: Pipeline, inputs: Sequence[TopicMessage], **kw: Any) -> ReconcileReport:
    """:func:`expect` then :func:`compare` (keyword arguments as for ``compare``)."""
    return compare(expect(pipeline, inputs), pipeline=pipeline, **kw)


def reconcile_snapshot(
    pipeline: Pipeline,
    snap: Snapshot,
    *,
    mac: WorkerMac | None = None,
    partitions: int | None = None,
    pending_deadline: float = PENDING_DEADLINE,
) -> ReconcileReport:
    """:func:`reconcile` of what :func:`~gateway.audit.snapshot.snapshot` read (``mac``,
    ``partitions`` and ``pending_deadline`` as for
    :func:`~gateway.audit.comparison.compare`; the snapshot's time is "now")."""
    return reconcile(
        pipeline,
        snap.inputs,
        disclosures=snap.disclosures,
        ledger=snap.ledger,
        agent_messages=snap.agent_messages,
        dead_letters=snap.dead_letters,
        agent_topics=snap.agent_topics,
        offsets=snap.offsets,
        mac=mac,
        partitions=partitions,
        now_ms=snap.read_at_ms if snap.read_at_ms >= 0 else None,
        pending_deadline=pending_deadline,
    )


def reconcile_deployment(
    settings: Settings,
    *,
    pipeline: Pipeline | None = None,
    use_offsets: bool = True,
    read_timeout: float = READ_TIMEOUT,
    connect_timeout: float = CONNECT_TIMEOUT,
    quiet: float = QUIET,
    pending_deadline: float = PENDING_DEADLINE,
    worker_key: bytes | None = None,
) -> ReconcileReport:
    """Reconcile the deployment ``settings`` describe (broker, topics, ledger, policy).

    The records are re-decided by the core built from the same settings (policy file,
    keys), so the audit decides exactly as the workers do; the disclosure topic's MACs are
    checked with the workers' key (``worker_key``, default the core's). ``use_offsets``,
    ``read_timeout``, ``connect_timeout`` and ``quiet`` are passed to
    :func:`~gateway.audit.snapshot.snapshot`; ``pending_deadline`` (seconds) to
    :func:`~gateway.audit.comparison.compare`.
    """
    if pipeline is None or worker_key is None:
        core = build_core(settings)
        pipeline = pipeline or core.pipeline
        worker_key = worker_key or core.worker_key
    topics = {name: a.topic for name, a in pipeline.policy.agents.items()}
    snap = snapshot(
        settings,
        topics,
        use_offsets=use_offsets,
        read_timeout=read_timeout,
        connect_timeout=connect_timeout,
        quiet=quiet,
    )
    return reconcile_snapshot(
        pipeline,
        snap,
        mac=WorkerMac(worker_key),
        partitions=settings.partitions,
        pending_deadline=pending_deadline,
    )


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
