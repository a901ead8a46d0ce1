"""The disclosure log (SPEC §7): a tamper-evident store of decision records.

Writers (the stream sink)::

    store = open_store(settings.ledger_url, signer=load_signing_key(...),
                       checkpoint_every=settings.checkpoint_every)
    result = store.append(records, shard=partition)   # durable on return; idempotent

Readers (CLI, review page): ``list_records`` / ``iter_records`` / ``count_records`` with a
``RecordFilter``, ``get_record``, the ``*_report`` functions and ``verify_log``.
"""

from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.proofs import ProofResult, build_proof, verify_bundle
from gateway.ledger.query import (
    RecordFilter,
    count_records,
    get_record,
    iter_records,
    list_records,
)
from gateway.ledger.reports import (
    AgentReport,
    ShineTheLightReport,
    SubjectReport,
    agent_report,
    categories_by_agent,
    disclosures_over_time,
    shine_the_light_report,
    subject_report,
    summarize_agent,
    summarize_shine_the_light,
    summarize_subject,
)
from gateway.ledger.retention import PruneResult, prune
from gateway.ledger.store import AppendResult, LedgerStore, StoredRecord, open_store
from gateway.ledger.verify import Problem, VerifyReport, verify_log

__all__ = [
    "AgentReport",
    "AppendResult",
    "Checkpoint",
    "LedgerStore",
    "Problem",
    "ProofResult",
    "PruneResult",
    "RecordFilter",
    "ShineTheLightReport",
    "StoredRecord",
    "SubjectReport",
    "VerifyReport",
    "agent_report",
    "build_proof",
    "categories_by_agent",
    "count_records",
    "disclosures_over_time",
    "get_record",
    "iter_records",
    "list_records",
    "open_store",
    "prune",
    "shine_the_light_report",
    "subject_report",
    "summarize_agent",
    "summarize_shine_the_light",
    "summarize_subject",
    "verify_bundle",
    "verify_log",
]
