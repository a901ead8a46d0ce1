"""Recording disclosures made outside the stream in the log (``gateway log
record-disclosure`` and the review page's form share this).

What a person typed (a ``DisclosureRequest``: customer ids, a recipient's short name and
details, categories, ...) becomes a checked ``gateway.manual.ManualDisclosure``:

* customer ids become their subject references with the pseudonym keys (new records use
  the current period's), and each subject's type is taken from the newest record about it
  in any period unless given;
* a recipient the policy or the log already knows needs only its short name (details
  given override what is known); a new one needs its legal name, address and role;
* a disclosure that would count as one for the recipient's own direct marketing (what the
  Shine the Light report lists) is refused: the privacy policy promises none.

The records are appended to their own shard, ``MANUAL_SHARD`` (no disclosure-topic
partition has a negative number), signed and checkpointed like every shard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, cast

import sqlalchemy as sa

from gateway.errors import DisclosureRejected
from gateway.keys import load_worker_key, worker_key_path
from gateway.ledger import access
from gateway.ledger import schema as t
from gateway.ledger.reports import for_own_marketing, latest_recipients, policy_recipients
from gateway.ledger.store import LedgerStore
from gateway.manual import (
    ROLES,
    SUBJECT_TYPES,
    ManualDisclosure,
    build_records,
    check_disclosure,
    kind_of,
    new_event_id,
)
from gateway.policy import load_policy
from gateway.pseudonyms import PseudonymKeyring
from gateway.records import DecisionRecord, Recipient, RecipientRole, RecordIds, SubjectType
from gateway.settings import Settings
from gateway.taxonomy import Taxonomy, default_taxonomy

# The shard of manual records: reserved, as no disclosure-topic partition is negative.
MANUAL_SHARD: Final = -1
MAX_CUSTOMER_ID: Final = 256


@dataclass(frozen=True)
class DisclosureRequest:
    """A disclosure made outside the stream, as a person describes it. Empty strings and
    None mean "not given"."""

    kind: str
    recipient: str
    customers: tuple[str, ...]
    categories: tuple[str, ...]
    request_ref: str
    approved_by: str
    legal_name: str | None = None
    address: str | None = None
    role: str | None = None
    contract: str | None = None
    subject_type: str | None = None
    paths: tuple[str, ...] = ()
    purposes: tuple[str, ...] = ()  # none: the kind's usual data uses
    legal_basis: str | None = None  # none: the kind's basis, if it has only one
    disclosed_at: datetime | None = None  # none: now


def _given(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


class DisclosureRecorder:
    """Checks and records disclosures made outside the stream in one log.

    ``store`` must hold the signing key; ``ids`` are keyed with the workers' key (so
    record ids look like the stream's); ``known`` are recipients to take details from by
    name (the policy's agents), before the log's own."""

    def __init__(
        self,
        store: LedgerStore,
        ids: RecordIds,
        pseudonyms: PseudonymKeyring,
        policy_version: str,
        *,
        known: Mapping[str, Recipient] | None = None,
        taxonomy: Taxonomy | None = None,
    ) -> None:
        store.require_signer("recording a disclosure")
        self.store = store
        self.ids = ids
        self.pseudonyms = pseudonyms
        self.policy_version = policy_version
        self.known = dict(known or {})
        self.taxonomy = taxonomy or default_taxonomy()

    def close(self) -> None:
        self.store.close()

    # -- from what was typed to a checked disclosure --------------------------------------

    def recipient(self, req: DisclosureRequest) -> Recipient:
        """The recipient: as typed, completed from what the policy or the log knows of the
        same name."""
        name = req.recipient.strip()
        base = self.known.get(name) or latest_recipients(self.store).get(name)
        given = {
            "legal_name": _given(req.legal_name),
            "address": _given(req.address),
            "role": _given(req.role),
            "contract": _given(req.contract),
        }
        values = {} if base is None else base.model_dump()
        values.update({k: v for k, v in given.items() if v is not None})
        missing = [k for k in ("legal_name", "address", "role") if not values.get(k)]
        if missing:
            raise DisclosureRejected(
                f"recipient {name!r} is new to the log and the policy: give its"
                f" {', '.join(m.replace('_', ' ') for m in missing)}",
                field=missing[0],
            )
        if values["role"] not in ROLES:
            raise DisclosureRejected(
                f"role {values['role']!r} is not one of {', '.join(ROLES)}", field="role"
            )
        return Recipient(
            name=name,
            legal_name=str(values["legal_name"]),
            address=str(values["address"]),
            role=cast(RecipientRole, values["role"]),
            contract=values.get("contract"),
        )

    def _subject_type(self, refs: Iterable[str]) -> SubjectType | None:
        c = t.records.c
        q = (
            sa.select(c.subject_type)
            .where(c.subject_ref.in_(list(refs)), c.body.is_not(None))
            .order_by(c.recorded_at.desc())
            .limit(1)
        )
        with self.store.engine.connect() as conn:
            found = conn.execute(q).scalar()
        return cast(SubjectType, found) if found in SUBJECT_TYPES else None

    def subjects(
        self, customers: Iterable[str], subject_type: str | None
    ) -> tuple[tuple[str, SubjectType], ...]:
        """Each customer's current subject reference and type (given, or as the newest
        record about the customer in any pseudonym period says). Errors name a customer
        by its position, never by its id."""
        wanted = _given(subject_type)
        if wanted is not None and wanted not in SUBJECT_TYPES:
            raise DisclosureRejected(
                f"subject type {wanted!r} is not one of {', '.join(SUBJECT_TYPES)}",
                field="subject_type",
            )
        ids: list[str] = []
        for raw in customers:
            cid = raw.strip()
            if cid and cid not in ids:
                ids.append(cid)
        out: list[tuple[str, SubjectType]] = []
        for n, cid in enumerate(ids, 1):
            if len(cid) > MAX_CUSTOMER_ID or not cid.isprintable():
                raise DisclosureRejected(
                    f"customer {n} of {len(ids)}: a customer id is printable text of at most"
                    f" {MAX_CUSTOMER_ID} characters",
                    field="customer",
                )
            refs = self.pseudonyms.subject_refs(cid)
            stype = wanted if wanted else self._subject_type(refs)
            if stype is None:
                raise DisclosureRejected(
                    f"customer {n} of {len(ids)} has no record in the log to take the subject"
                    f" type from: give the subject type ({' or '.join(SUBJECT_TYPES)}), and"
                    " check the id is spelled as the customer system writes it",
                    field="subject_type",
                )
            out.append((refs[0], stype))
        return tuple(out)

    def prepare(
        self, req: DisclosureRequest, recorded_by: str, now: datetime | None = None
    ) -> ManualDisclosure:
        """``req`` as a checked disclosure (``DisclosureRejected`` names what to fix)."""
        now = datetime.now(UTC) if now is None else now
        kind = kind_of(req.kind.strip())
        basis = _given(req.legal_basis)
        if basis is None:
            if len(kind.bases) != 1:
                raise DisclosureRejected(
                    f"say on which legal basis: a {kind.name} disclosure rests on"
                    f" {' or '.join(kind.bases)}",
                    field="legal_basis",
                )
            basis = kind.bases[0]
        purposes = tuple(p.strip() for p in req.purposes if p.strip()) or kind.purposes
        when = req.disclosed_at or now
        disclosure = ManualDisclosure(
            kind=kind.name,
            recipient=self.recipient(req),
            subjects=self.subjects(req.customers, req.subject_type),
            categories=tuple(c.strip() for c in req.categories if c.strip()),
            purposes=purposes,
            legal_basis=basis,
            request_ref=req.request_ref.strip(),
            approved_by=req.approved_by.strip(),
            recorded_by=recorded_by.strip(),
            disclosed_at=when if when.tzinfo else when.replace(tzinfo=UTC),
            paths=tuple(p.strip() for p in req.paths if p.strip()),
            event_id=new_event_id(),
        )
        check_disclosure(disclosure, self.taxonomy, now)
        return disclosure

    # -- into the log ---------------------------------------------------------------------

    def records(self, d: ManualDisclosure, now: datetime | None = None) -> list[DecisionRecord]:
        """The records of ``d``; refused if they would disclose for the recipient's own
        direct marketing (the privacy policy promises no such disclosure)."""
        records = build_records(
            d, self.ids, self.policy_version, datetime.now(UTC) if now is None else now
        )
        if any(for_own_marketing(rec) for rec in records):
            raise DisclosureRejected(
                f"to a {d.recipient.role.replace('_', ' ')} for {', '.join(d.purposes)}, this"
                " would be a disclosure for the recipient's own direct marketing, which the"
                ' privacy policy promises never to make ("We have and follow a policy of not'
                " disclosing customers' personal information to third parties for direct"
                ' marketing purposes")',
                field="purpose",
            )
        return records

    def record(
        self, req: DisclosureRequest, recorded_by: str, now: datetime | None = None
    ) -> list[DecisionRecord]:
        """Check ``req`` and append its records to the log's manual shard (durable, signed
        and checkpointed on return)."""
        records = self.records(self.prepare(req, recorded_by, now), now)
        self.store.append(records, shard=MANUAL_SHARD)
        return records


def recorder_from_settings(settings: Settings) -> DisclosureRecorder:
    """A recorder over the ledger ``settings`` name, with the keys it takes from the key
    directory (the signing key, the workers' key, the pseudonym keys) and the policy
    file's version and agents. The recorder owns the store it opens (``close``)."""
    policy = load_policy(settings.policy_path)
    ids = RecordIds(load_worker_key(worker_key_path(settings.keys_dir)))
    pseudonyms = access.pseudonyms(settings)
    store = access.open_ledger(settings, signing="required")
    try:
        return DisclosureRecorder(
            store, ids, pseudonyms, policy.policy_version, known=policy_recipients(policy)
        )
    except BaseException:
        store.close()
        raise
