"""Disclosures made outside the stream: what the privacy policy allows besides the agents,
checked and turned into decision records for the same log.

The policy's "We may also share your Personal Information" list names disclosures no
event causes: answering a subpoena, preventing fraud, collecting a debt, a merger, ... Each
is a *kind* here (``KINDS``), with the policy's own sentence, the legal bases it can rest
on, its usual data uses and the recipients it can go to. A disclosure of a kind is
recorded as one ``disclosed`` record per subject, event type ``manual.<kind>``, so access
reports, agent reports and Shine the Light count it like any other.

A recorded manual disclosure carries:

* the recipient (``agent`` is its short name in the log, ``recipient`` its legal name,
  address, role and contract or request reference),
* the categories disclosed (``categories_sent``) and, when known, the field paths,
* the data uses (``purposes``) and the one legal basis relied on,
* the request it answered (``reason``: a court order number, a ticket), and in
  ``consent_state`` under ``manual``: the kind, the request, who approved the disclosure
  and who recorded it (what the decision consulted),
* when it was disclosed (``occurred_at``) and recorded (``recorded_at``),
* an event id of its own (``manual-<32 hex>``), the fingerprint of everything above
  (``event_fp``), and ids keyed with the workers' key like the stream's records.

Nothing here touches the store; ``gateway.ledger.manual`` appends what ``build_records``
makes.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, get_args

import orjson

from gateway.errors import DisclosureRejected
from gateway.policy import NAME_RE, LegalBasis
from gateway.records import (
    DecisionRecord,
    Recipient,
    RecipientRole,
    RecordIds,
    SubjectType,
    decision_digest,
)
from gateway.taxonomy import Taxonomy

# Event types of manual records start with this; the rest is the kind.
MANUAL_EVENT_PREFIX: Final = "manual."

LEGAL_BASES: Final[tuple[LegalBasis, ...]] = get_args(LegalBasis)
ROLES: Final[tuple[RecipientRole, ...]] = get_args(RecipientRole)
SUBJECT_TYPES: Final[tuple[SubjectType, ...]] = get_args(SubjectType)

# A disclosure recorded later than it happened is fine; one "disclosed" in the future is a
# typo, beyond a clock's skew.
_FUTURE_SKEW: Final = timedelta(minutes=5)
_MAX_TEXT: Final = 200
MAX_SUBJECTS: Final = 10_000
_PATH_RE: Final = re.compile(r"[A-Za-z0-9_.\[\]*-]{1,200}")
_NO_OWN_MARKETING: Final = (
    'the privacy policy promises none ("We have and follow a policy of not disclosing'
    " customers' personal information to third parties for direct marketing purposes\")"
)


@dataclass(frozen=True)
class DisclosureKind:
    """One kind of disclosure the privacy policy allows outside the stream."""

    name: str
    policy: str  # the privacy policy's sentence
    bases: tuple[LegalBasis, ...]  # the legal bases it can rest on
    purposes: tuple[str, ...]  # its usual data uses (the default); () = say which
    roles: tuple[RecipientRole, ...] = ROLES  # whom it can go to

    @property
    def event_type(self) -> str:
        return MANUAL_EVENT_PREFIX + self.name


_KINDS: Final = (
    DisclosureKind(
        "consent",
        "When you agreed to the sharing.",
        ("consent",),
        (),
    ),
    DisclosureKind(
        "subject_request",
        "When responding to an inquiry or request initiated by you, to the extent reasonably"
        " needed.",
        ("contract", "consent"),
        ("essential.service.operations.support",),
    ),
    DisclosureKind(
        "affiliate",
        "Within the Kasperek Optical family of companies for purposes described in this Policy.",
        LEGAL_BASES,
        (),
        ("affiliate",),
    ),
    DisclosureKind(
        "legal_request",
        "When we are required to provide information in response to a subpoena, court"
        " order, or other applicable law or legal process, or to comply with a written"
        " government request.",
        ("legal_obligation",),
        ("essential.legal_obligation.legal_process",),
        ("government", "third_party"),
    ),
    DisclosureKind(
        "fraud_prevention",
        "When we have a good faith belief that the disclosure is necessary to prevent or"
        " respond to fraud, defend our websites, or applications against attacks, or to"
        " protect the property and safety of us, our customers and users, or the public.",
        ("legitimate_interests", "legal_obligation"),
        ("essential.fraud_detection",),
    ),
    DisclosureKind(
        "authorized_by_law",
        "When we have a legitimate business need and we are expressly authorized to do so by"
        " applicable law.",
        ("legitimate_interests", "legal_obligation"),
        (),
    ),
    DisclosureKind(
        "debt_collection",
        "When we have to collect money you owe us, including through legal proceedings.",
        ("legitimate_interests", "contract"),
        ("finance.debt_collection",),
    ),
    DisclosureKind(
        "legal_action",
        "As needed, to identify, contact, or take legal action against customers or third"
        " parties violating our Acceptable Use Policy, interfering with property rights or"
        " with the Site, or breaking the law.",
        ("legitimate_interests",),
        ("essential.legal_claims",),
    ),
    DisclosureKind(
        "merger",
        "If we merge with or are acquired by another company, we sell a website,"
        " application, or business unit or all or a substantial portion of our assets are"
        " acquired by another company.",
        ("legitimate_interests",),
        ("operations.business_transfer",),
        ("third_party", "affiliate"),
    ),
)
KINDS: Final[dict[str, DisclosureKind]] = {k.name: k for k in _KINDS}


@dataclass(frozen=True)
class ManualDisclosure:
    """One disclosure made outside the stream, as recorded: to one recipient, about one
    or more subjects (each by its current subject reference and type)."""

    kind: str
    recipient: Recipient
    subjects: tuple[tuple[str, SubjectType], ...]
    categories: tuple[str, ...]
    purposes: tuple[str, ...]
    legal_basis: str
    request_ref: str
    approved_by: str
    recorded_by: str
    disclosed_at: datetime
    paths: tuple[str, ...] = ()
    # Generated once (``new_event_id``): the disclosure's own event id.
    event_id: str = ""


def new_event_id() -> str:
    """A fresh event id for a manual disclosure (random: nothing about anyone in it)."""
    return f"manual-{uuid.uuid4().hex}"


def kind_of(name: str) -> DisclosureKind:
    """The kind called ``name``, or a ``DisclosureRejected`` listing the kinds."""
    kind = KINDS.get(name)
    if kind is None:
        raise DisclosureRejected(
            f"unknown kind of disclosure {name!r}: one of {', '.join(KINDS)}", field="kind"
        )
    return kind


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _text(value: str, what: str, field: str) -> str:
    value = value.strip()
    if not value:
        raise DisclosureRejected(f"{what} is missing", field=field)
    if len(value) > _MAX_TEXT or not value.isprintable():
        raise DisclosureRejected(
            f"{what} must be one line of printable text, at most {_MAX_TEXT} characters",
            field=field,
        )
    return value


def check_recipient(recipient: Recipient, kind: DisclosureKind) -> None:
    """The recipient's name, details and role, as a disclosure of ``kind`` needs them."""
    if not NAME_RE.match(recipient.name):
        raise DisclosureRejected(
            f"recipient name {recipient.name!r} is not a name the log can list: lower-case"
            " letters, digits, '_' and '-', starting with a letter (e.g. county-court)",
            field="recipient",
        )
    _text(recipient.legal_name, "the recipient's legal name", "legal_name")
    _text(recipient.address, "the recipient's address", "address")
    if recipient.contract is not None:
        _text(recipient.contract, "the recipient's contract or request reference", "contract")
    if recipient.role not in kind.roles:
        raise DisclosureRejected(
            f"a {kind.name} disclosure goes to a recipient of role"
            f" {' or '.join(kind.roles)}, not {recipient.role}",
            field="role",
        )


def check_disclosure(d: ManualDisclosure, taxonomy: Taxonomy, now: datetime) -> DisclosureKind:
    """Check ``d`` against its kind, the taxonomy and the privacy policy; return its kind.

    Raises ``DisclosureRejected`` naming the field: an unknown kind, category or data use
    (with the nearest known keys), a legal basis the kind does not rest on, a purpose for
    the recipient's own marketing, a missing request reference or approver, a disclosure
    dated in the future. Messages name no subject."""
    kind = kind_of(d.kind)
    check_recipient(d.recipient, kind)
    if not d.subjects:
        raise DisclosureRejected("say about whom: at least one customer id", field="customer")
    if len(d.subjects) > MAX_SUBJECTS:
        raise DisclosureRejected(
            f"at most {MAX_SUBJECTS} subjects per disclosure; record a larger one in parts",
            field="customer",
        )
    if not d.categories:
        raise DisclosureRejected(
            "say what was disclosed: at least one data category (e.g. user.contact.email)",
            field="category",
        )
    known_cats = sorted(taxonomy.categories)
    for cat in d.categories:
        if not taxonomy.is_category(cat):
            raise DisclosureRejected(
                f"{cat!r} is not a data category{_suggest(cat, known_cats)}; categories are"
                " the taxonomy's keys (schemas/taxonomy.yaml and the Fides defaults)",
                field="category",
            )
    for path in d.paths:
        if not _PATH_RE.fullmatch(path):
            raise DisclosureRejected(
                f"{path!r} is not a field path (dotted names, e.g. customer.email)",
                field="path",
            )
    if not d.purposes:
        raise DisclosureRejected(
            f"say for which data use: a {kind.name} disclosure has no usual one (e.g."
            " essential.service.operations.support)",
            field="purpose",
        )
    known_uses = sorted(taxonomy.uses)
    for use in d.purposes:
        if not taxonomy.is_use(use):
            raise DisclosureRejected(
                f"{use!r} is not a data use{_suggest(use, known_uses)}; data uses are the"
                " taxonomy's keys (schemas/taxonomy.yaml and the Fides defaults)",
                field="purpose",
            )
        if taxonomy.is_own_marketing(use):
            raise DisclosureRejected(
                f"{use!r} is the recipient's own marketing, which {_NO_OWN_MARKETING}",
                field="purpose",
            )
    if d.legal_basis not in kind.bases:
        if d.legal_basis not in LEGAL_BASES:
            problem = f"{d.legal_basis!r} is not a legal basis (one of {', '.join(LEGAL_BASES)})"
        else:
            problem = f"a {kind.name} disclosure does not rest on {d.legal_basis}"
        raise DisclosureRejected(
            f"{problem}: it rests on {' or '.join(kind.bases)}", field="legal_basis"
        )
    _text(d.request_ref, "the request reference (e.g. the court order's number)", "request_ref")
    _text(d.approved_by, "who approved the disclosure", "approved_by")
    _text(d.recorded_by, "who records the disclosure", "recorded_by")
    if d.disclosed_at.tzinfo is None:
        raise DisclosureRejected("the disclosure time needs a time zone", field="disclosed_at")
    if d.disclosed_at > now + _FUTURE_SKEW:
        raise DisclosureRejected(
            "the disclosure time is in the future: record a disclosure once it was made",
            field="disclosed_at",
        )
    return kind


def _fingerprint(d: ManualDisclosure) -> str:
    """SHA-256 (hex) of everything the disclosure states: its ``event_fp``."""
    statement = {
        "event_id": d.event_id,
        "kind": d.kind,
        "recipient": d.recipient.model_dump(mode="json"),
        "subjects": sorted(ref for ref, _ in d.subjects),
        "categories": sorted(d.categories),
        "paths": sorted(d.paths),
        "purposes": sorted(d.purposes),
        "legal_basis": d.legal_basis,
        "request_ref": d.request_ref,
        "approved_by": d.approved_by,
        "recorded_by": d.recorded_by,
        "disclosed_at": d.disclosed_at.astimezone(UTC).isoformat(),
    }
    return hashlib.sha256(orjson.dumps(statement, option=orjson.OPT_SORT_KEYS)).hexdigest()


def build_records(
    d: ManualDisclosure, ids: RecordIds, policy_version: str, recorded_at: datetime
) -> list[DecisionRecord]:
    """One ``disclosed`` record per subject of ``d`` (checked with ``check_disclosure``
    first), sharing one decision id; each record id is keyed with the workers' key from
    the disclosure's fingerprint, the recipient and the subject."""
    if not d.event_id:
        raise ValueError("a manual disclosure needs its event id (new_event_id())")
    event_fp = _fingerprint(d)
    purposes = sorted(set(d.purposes))
    bases = [d.legal_basis]
    paths = sorted(set(d.paths))
    digest = decision_digest(
        "disclosed", d.request_ref, paths, [], [], purposes, bases, policy_version
    )
    decision_id = ids.decision_id(event_fp, policy_version)
    particulars = {
        "kind": d.kind,
        "request": d.request_ref,
        "approved_by": d.approved_by,
        "recorded_by": d.recorded_by,
    }
    records = []
    for ref, subject_type in d.subjects:
        records.append(
            DecisionRecord(
                record_id=ids.record_id(event_fp, d.recipient.name, f"manual {ref}", digest),
                decision_id=decision_id,
                event_id=d.event_id,
                event_type=MANUAL_EVENT_PREFIX + d.kind,
                occurred_at=d.disclosed_at,
                recorded_at=recorded_at,
                subject_ref=ref,
                subject_type=subject_type,
                agent=d.recipient.name,
                recipient=d.recipient,
                outcome="disclosed",
                reason=d.request_ref,
                purposes=purposes,
                legal_bases=bases,
                categories_sent=sorted(set(d.categories)),
                paths_sent=paths,
                policy_version=policy_version,
                event_fp=event_fp,
                consent_state={"manual": particulars},
            )
        )
    return records


def is_manual(rec: DecisionRecord) -> bool:
    """Whether ``rec`` records a disclosure made outside the stream."""
    return rec.event_type.startswith(MANUAL_EVENT_PREFIX)
