"""The disclosure log: a tamper-evident store of decision records (an append-only Merkle
log per shard, with signed checkpoints), and the queries and reports over it.

Writers (the stream sink)::

    store = open_store(settings.ledger_url, signer=load_signing_key(...),
                       checkpoint_every=settings.checkpoint_every)
    result = store.append(records, shard=partition)   # durable on return; idempotent

Readers (CLI, review page): ``list_records`` / ``iter_records`` / ``count_records`` with a
``RecordFilter``, ``get_record``, the ``*_report`` functions and ``verify_log``.

Trust beyond the operator: every append signs a ``LogCheckpoint`` over all shards
(``store.latest_log_checkpoint()``); ``verify_log(..., against=saved)`` and
``build_consistency_proof`` prove the log still extends a checkpoint saved earlier; a
``Witness`` cosigns checkpoints and ``add_cosignatures`` keeps its answers; signing-key
rotations are recorded with ``record_handover`` and followed by ``verify_chain``.
"""

from gateway.ledger.checkpoints import Checkpoint
from gateway.ledger.consistency import ConsistencyProof, build_consistency_proof
from gateway.ledger.cosignatures import StoredCosignature, add_cosignatures
from gateway.ledger.keyhistory import KeyRing, record_handover, verify_chain
from gateway.ledger.logcheckpoint import DEFAULT_ORIGIN, LogCheckpoint, ShardHead
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
from gateway.ledger.verify import Problem, VerifyReport, WitnessResult, verify_log
from gateway.ledger.witness import Cosigned, Witness

__all__ = [
    "DEFAULT_ORIGIN",
    "AgentReport",
    "AppendResult",
    "Checkpoint",
    "ConsistencyProof",
    "Cosigned",
    "KeyRing",
    "LedgerStore",
    "LogCheckpoint",
    "Problem",
    "ProofResult",
    "PruneResult",
    "RecordFilter",
    "ShardHead",
    "ShineTheLightReport",
    "StoredCosignature",
    "StoredRecord",
    "SubjectReport",
    "VerifyReport",
    "Witness",
    "WitnessResult",
    "add_cosignatures",
    "agent_report",
    "build_consistency_proof",
    "build_proof",
    "categories_by_agent",
    "count_records",
    "disclosures_over_time",
    "get_record",
    "iter_records",
    "list_records",
    "open_store",
    "prune",
    "record_handover",
    "shine_the_light_report",
    "subject_report",
    "summarize_agent",
    "summarize_shine_the_light",
    "summarize_subject",
    "verify_bundle",
    "verify_chain",
    "verify_log",
]
