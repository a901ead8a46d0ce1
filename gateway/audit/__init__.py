"""Reconciliation: every input event accounted for, every disclosure logged.

The auditor trusts none of the gateway's bookkeeping. It replays the input topic through
the same pipeline the worker runs, which yields the exact records, agent messages and dead
letters each input must have caused, and compares that expectation with what the
disclosure topic, the ledger, the agent topics and the dead-letter topic really hold.

* :mod:`~gateway.audit.model` — what is read and what is expected;
* :mod:`~gateway.audit.expectation` — the replay;
* :mod:`~gateway.audit.comparison` — expected against found, one check per source (pure);
* :mod:`~gateway.audit.report` — the findings (gaps, pending work, warnings);
* :mod:`~gateway.audit.snapshot` — reading a deployment (the only part that talks to
  Kafka and SQL);
* :mod:`~gateway.audit.reconciliation` — the whole audit, once or until settled.

Nothing here reads or prints personal data: findings name positions, ids, agents and
reasons; inputs are identified by digest.
"""

from gateway.audit.comparison import claimed_disclosure_id, compare
from gateway.audit.expectation import expect
from gateway.audit.model import Expected, RecordedDecision, TopicMessage
from gateway.audit.reconciliation import (
    reconcile,
    reconcile_deployment,
    reconcile_snapshot,
    reconcile_until_settled,
)
from gateway.audit.report import Finding, ReconcileReport
from gateway.audit.snapshot import Snapshot

__all__ = [
    "Expected",
    "Finding",
    "ReconcileReport",
    "RecordedDecision",
    "Snapshot",
    "TopicMessage",
    "claimed_disclosure_id",
    "compare",
    "expect",
    "reconcile",
    "reconcile_deployment",
    "reconcile_snapshot",
    "reconcile_until_settled",
]
