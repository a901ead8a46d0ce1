"""Realistic decision records and database URLs for the ledger tests (and the CLI, web and
security tests that need a ledger).

Agents as in the default policy: shipping, payments, email, analytics (service providers)
and a reseller (third party, marketing purposes, business subjects only). Records span two
years so that year-bounded reports have something to exclude.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from gateway.crypto import subject_ref
from gateway.records import (
    DecisionRecord,
    Outcome,
    Recipient,
    RecordIds,
    SubjectType,
    decision_digest,
)

_IDS = RecordIds(b"ledger-test-worker-key".ljust(32, b"."))
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MASTER = bytes(range(32))  # test pseudonym key

RECIPIENTS = {
    "shipping": Recipient(
        name="shipping",
        legal_name="Parcel Express Ltd",
        address="1 Depot Way, Columbus, OH 43004",
        role="service_provider",
        contract="DPA-2023-014",
    ),
    "payments": Recipient(
        name="payments",
        legal_name="PayCo Processing Inc.",
        address="500 Market St, San Francisco, CA 94105",
        role="service_provider",
        contract="DPA-2022-007",
    ),
    "email": Recipient(
        name="email",
        legal_name="MailRelay <Services> & Co",
        address="9 Inbox Rd, Austin, TX 78701",
        role="service_provider",
        contract="DPA-2024-001",
    ),
    "analytics": Recipient(
        name="analytics",
        legal_name="Insight Metrics LLC",
        address="77 Data Ave, Seattle, WA 98101",
        role="service_provider",
        contract="DPA-2023-020",
    ),
    "reseller": Recipient(
        name="reseller",
        legal_name="Lens Partners Wholesale GmbH",
        address="Hauptstr. 5, 10115 Berlin",
        role="third_party",
        contract="RSA-2024-003",
    ),
}

# agent -> (event types, purposes, categories sent, categories transformed, removed)
PROFILES: dict[str, tuple[list[str], list[str], list[str], list[str], list[str]]] = {
    "shipping": (
        ["order.placed", "order.shipped"],
        ["essential.service.shipping"],
        [
            "user.name",
            "user.contact.address.street",
            "user.contact.address.city",
            "user.contact.address.postal_code",
        ],
        ["user.contact.phone_number"],
        ["user.financial.bank_account", "user.health_and_medical.vision_prescription"],
    ),
    "payments": (
        ["payment.requested", "order.placed"],
        ["essential.service.payment_processing"],
        ["user.financial.bank_account", "user.name"],
        [],
        ["user.contact.address.street"],
    ),
    "email": (
        ["order.shipped", "customer.registered"],
        ["essential.service.notifications.email", "marketing.communications.email"],
        ["user.contact.email", "user.name"],
        [],
        ["user.contact.address.street"],
    ),
    "analytics": (
        ["site.visit", "order.placed"],
        ["analytics.reporting"],
        [],
        ["user.device.ip_address", "user.unique_id.pseudonymous"],
        ["user.contact.email", "user.name"],
    ),
    "reseller": (
        ["customer.registered", "order.placed"],
        ["marketing.communications", "third_party_sharing"],
        ["user.contact.email", "user.name", "user.contact.phone_number"],
        ["user.contact.address.postal_code"],
        ["user.financial.bank_account"],
    ),
}

CUSTOMERS: dict[str, SubjectType] = {
    "C-1001": "consumer",
    "C-1002": "consumer",
    "C-1003": "consumer",
    "C-1004": "consumer",
    "B-2001": "business",
    "B-2002": "business",
    "B-2003": "business",
}
MARKETING_BUSINESSES = {"B-2001", "B-2002"}  # agreed to receive reseller marketing
ERASED = {"C-1004"}


def ref(customer_id: str) -> str:
    return subject_ref(MASTER, customer_id)


def make_record(
    agent: str,
    customer: str,
    when: datetime,
    *,
    outcome: Outcome = "disclosed",
    event_type: str | None = None,
    seq: int = 0,
) -> DecisionRecord:
    events, purposes, sent, transformed, removed = PROFILES[agent]
    purposes_out: list[str]
    sent_out: list[str]
    tr_out: list[str]
    rm_out: list[str]
    event_type = event_type or events[seq % len(events)]
    event_id = f"evt-{customer}-{seq}-{event_type}"
    if outcome == "withheld":
        purposes_out, sent_out, tr_out, rm_out = [], [], [], sorted({*sent, *transformed, *removed})
    elif outcome == "erasure_notice":
        purposes_out, sent_out, tr_out, rm_out = [], [], [], []
    else:
        purposes_out, sent_out, tr_out, rm_out = purposes, sent, transformed, removed
    return DecisionRecord(
        # Ids as the pipeline makes them, with a fixed worker key (the event id stands in
        # for the event's fingerprint).
        record_id=_IDS.record_id(
            event_id,
            agent,
            "erasure" if outcome == "erasure_notice" else "event",
            decision_digest(outcome, None, sent_out, tr_out, rm_out, purposes_out, [], "policy-v1"),
        ),
        decision_id=_IDS.decision_id(event_id, "policy-v1"),
        event_id=event_id,
        event_type="erasure.requested" if outcome == "erasure_notice" else event_type,
        occurred_at=when - timedelta(seconds=2),
        recorded_at=when,
        subject_ref=ref(customer),
        subject_type=CUSTOMERS[customer],
        agent=agent,
        recipient=RECIPIENTS[agent],
        outcome=outcome,
        reason={
            "withheld": "nothing permitted for this subject",
            "erasure_notice": "subject asked to be forgotten",
        }.get(outcome),
        purposes=purposes_out,
        legal_bases=["contract"] if agent != "reseller" else ["consent"],
        categories_sent=sent_out,
        categories_transformed=tr_out,
        categories_removed=rm_out,
        paths_sent=[f"data.{c.rsplit('.', 1)[-1]}" for c in sent_out],
        paths_transformed=[f"data.{c.rsplit('.', 1)[-1]}" for c in tr_out],
        paths_removed=[f"data.{c.rsplit('.', 1)[-1]}" for c in rm_out],
        consent=["marketing:opt_in"] if agent == "reseller" and outcome == "disclosed" else [],
        policy_version="sha256:" + "ab" * 32,
        key_id=f"{agent}-k1" if outcome != "withheld" else None,
        payload_digest="sha256:" + uuid.uuid5(uuid.NAMESPACE_OID, event_id).hex * 2
        if outcome != "withheld"
        else None,
        topic=f"gateway.agent.{agent}",
    )


def make_records(n: int = 120, seed: int = 7) -> list[DecisionRecord]:
    """``n`` records over 2024-2025 in recording order, obeying the policy's shape:
    reseller disclosures only for business customers with marketing consent."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 3, 9, 0, tzinfo=UTC)
    out: list[DecisionRecord] = []
    for i in range(n):
        when = start + timedelta(hours=i * 5 + rng.randint(0, 4), minutes=rng.randint(0, 59))
        customer = rng.choice(sorted(CUSTOMERS))
        agent = rng.choice(sorted(PROFILES))
        outcome: Outcome = "disclosed"
        if (agent == "reseller" and customer not in MARKETING_BUSINESSES) or rng.random() < 0.08:
            outcome = "withheld"
        out.append(make_record(agent, customer, when, outcome=outcome, seq=i))
    # The erased customer: an erasure notice to every agent that ever received their data.
    last = out[-1].recorded_at + timedelta(minutes=5)
    got = sorted(
        {r.agent for r in out if r.subject_ref == ref("C-1004") and r.outcome == "disclosed"}
    )
    for j, agent in enumerate(got):
        out.append(
            make_record(
                agent, "C-1004", last + timedelta(seconds=j), outcome="erasure_notice", seq=n + j
            )
        )
    return out


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger URL: a SQLite file, or a PostgreSQL schema dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger' / 'ledger.db'}"
        return
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
