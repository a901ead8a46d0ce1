"""Manual disclosures as records: what ``gateway.manual`` makes of one, and how the reports
count it. "For California Residents. We have and follow a policy of not disclosing
customers' personal information to third parties for direct marketing purposes." """

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import DisclosureRejected
from gateway.ledger.reports import for_own_marketing, summarize_shine_the_light
from gateway.manual import (
    KINDS,
    ManualDisclosure,
    build_records,
    check_disclosure,
    is_manual,
    new_event_id,
)
from gateway.records import DecisionRecord, Recipient, RecordIds
from gateway.taxonomy import default_taxonomy
from tests.ledger.data import ref

IDS = RecordIds(b"manual-test-worker-key".ljust(32, b"."))
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LAW_FIRM = Recipient(
    name="smith-law",
    legal_name="Smith & Partners LLP",
    address="10 Court Sq, Columbus, OH",
    role="third_party",
)


def disclosure(**changes: object) -> ManualDisclosure:
    values: dict[str, object] = {
        "kind": "legal_request",
        "recipient": LAW_FIRM,
        "subjects": ((ref("C-1001"), "consumer"), (ref("B-2001"), "business")),
        "categories": ("user.contact.email",),
        "purposes": ("third_party_sharing.legal_obligation",),
        "legal_basis": "legal_obligation",
        "request_ref": "Subpoena 2026-77",
        "approved_by": "general-counsel",
        "recorded_by": "privacy-office",
        "disclosed_at": NOW - timedelta(days=1),
        "event_id": "manual-" + "0" * 32,
    }
    values.update(changes)
    return ManualDisclosure(**values)  # type: ignore[arg-type]


def test_one_record_per_subject_keyed_and_content_addressed() -> None:
    d = disclosure()
    check_disclosure(d, default_taxonomy(), NOW)
    records = build_records(d, IDS, "policy-v1", NOW)
    assert [r.subject_ref for r in records] == [ref("C-1001"), ref("B-2001")]
    assert len({r.record_id for r in records}) == 2
    assert len({r.decision_id for r in records}) == 1 and len({r.event_fp for r in records}) == 1
    assert all(is_manual(r) and r.outcome == "disclosed" for r in records)
    # The same disclosure gives the same ids; another request, others.
    assert [r.record_id for r in build_records(d, IDS, "policy-v1", NOW)] == [
        r.record_id for r in records
    ]
    other = build_records(disclosure(request_ref="Subpoena 2026-78"), IDS, "policy-v1", NOW)
    assert not {r.record_id for r in other} & {r.record_id for r in records}
    # A record survives the log's canonical JSON unchanged.
    assert DecisionRecord.from_json(records[0].to_json()) == records[0]
    assert new_event_id() != new_event_id()


def test_answering_legal_process_is_not_marketing_but_own_marketing_would_show() -> None:
    """Sharing with a third party to answer a subpoena is nobody's marketing; a disclosure
    for the recipient's own marketing, were one ever recorded, is listed by Shine the
    Light like a streamed one."""
    legal = build_records(disclosure(), IDS, "policy-v1", NOW)
    assert not any(for_own_marketing(r) for r in legal)
    assert summarize_shine_the_light(legal, 2026).third_parties == []
    # Built past the checks the recorder makes (it refuses this): the report catches it.
    theirs = build_records(
        disclosure(kind="consent", purposes=("marketing.communications",), legal_basis="consent"),
        IDS,
        "policy-v1",
        NOW,
    )
    assert all(for_own_marketing(r) for r in theirs)
    rep = summarize_shine_the_light(theirs, 2026)
    assert [(p.agent, p.subjects) for p in rep.third_parties] == [("smith-law", 2)]
    with pytest.raises(DisclosureRejected, match="own marketing"):
        check_disclosure(
            disclosure(
                kind="consent", purposes=("third_party_sharing.marketing",), legal_basis="consent"
            ),
            default_taxonomy(),
            NOW,
        )


def test_every_kind_names_known_data_uses_and_its_policy_sentence() -> None:
    tax = default_taxonomy()
    assert set(KINDS) == {
        "consent",
        "subject_request",
        "affiliate",
        "legal_request",
        "fraud_prevention",
        "authorized_by_law",
        "debt_collection",
        "legal_action",
        "merger",
    }
    for kind in KINDS.values():
        assert kind.policy and kind.bases and kind.roles
        assert all(tax.is_use(p) and not tax.is_marketing(p) for p in kind.purposes)
