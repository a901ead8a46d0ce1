"""Reconciliation: every input event accounted for, every disclosure logged, every decision
one the gateway could have made.

The auditor trusts none of the gateway's bookkeeping. It admits the input topic (all
partitions, with the publishers' signatures) through the same pipeline the worker runs and
groups it per customer. The gateway decides a customer's events on one subject partition
in an arrival order the auditor cannot see, so instead of replaying one order it checks
each record: its event exists, its consent state is one some order the routing allows
gives (:mod:`~gateway.audit.states`), and its decision is the engine's under that state;
and it checks that every input has its outputs on the disclosure topic, the ledger, the
agent topics and the dead-letter topic.

* :mod:`~gateway.audit.model` -- what is read;
* :mod:`~gateway.audit.expectation` -- the admission, and the input per customer;
* :mod:`~gateway.audit.states` -- which consent states a customer could have had;
* :mod:`~gateway.audit.comparison` -- the checks, per source and per record (pure);
* :mod:`~gateway.audit.report` -- the findings (gaps, pending work, warnings);
* :mod:`~gateway.audit.snapshot` -- reading a deployment (the only part that talks to
  Kafka and SQL);
* :mod:`~gateway.audit.reconciliation` -- the whole audit, once or until settled.

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
