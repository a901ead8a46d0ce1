"""Reports over the log: access request (one subject), one agent, and the yearly
"Shine the Light" disclosure (California Civil Code §1798.83).

Each report is computed by a pure function over an iterable of records (``summarize_*``),
so tests and the review page can feed it any records; the store-level wrappers pick the
records with a filter and stream them through. Categories counted as *received* are those
sent raw or transformed; removed ones never left the gateway.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from gateway.ledger.query import RecordFilter, iter_records
from gateway.ledger.store import LedgerStore
from gateway.records import DecisionRecord
from gateway.taxonomy import covers

# Purposes that mean "for the recipient's own direct marketing" when the recipient is a
# third party (a service provider acts only on the company's behalf).
SHINE_THE_LIGHT_PURPOSES: Final = ("marketing", "third_party_sharing")


def _now() -> datetime:
    return datetime.now(UTC)


def received(rec: DecisionRecord) -> set[str]:
    return {*rec.categories_sent, *rec.categories_transformed}


@dataclass
class RecipientSummary:
    agent: str
    legal_name: str
    address: str
    role: str
    contract: str | None
    disclosures: int = 0
    withheld: int = 0
    erasure_notices: int = 0
    categories: list[str] = field(default_factory=list)
    purposes: list[str] = field(default_factory=list)
    legal_bases: list[str] = field(default_factory=list)
    first_disclosed: datetime | None = None
    last_disclosed: datetime | None = None


@dataclass
class SubjectReport:
    subject_ref: str
    generated_at: datetime
    subject_types: list[str]
    records: int
    recipients: list[RecipientSummary]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass
class AgentReport:
    agent: str
    generated_at: datetime
    since: datetime | None
    until: datetime | None
    recipient: dict[str, Any] | None
    records: int
    outcomes: dict[str, int]
    subjects: int
    subjects_by_type: dict[str, int]
    categories: dict[str, int]  # category -> disclosures that carried it
    purposes: dict[str, int]
    event_types: dict[str, int]
    months: dict[str, int]  # YYYY-MM -> disclosures
    first: datetime | None
    last: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


@dataclass
class ThirdPartySummary:
    agent: str
    legal_name: str
    address: str
    categories: list[str]
    purposes: list[str]
    disclosures: int
    subjects: int
    consumer_subjects: int
    business_subjects: int


@dataclass
class ShineTheLightReport:
    year: int
    generated_at: datetime
    categories: list[str]
    third_parties: list[ThirdPartySummary]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return obj


# -- pure summaries -----------------------------------------------------------------------


def summarize_subject(records: Iterable[DecisionRecord], subject_ref: str) -> SubjectReport:
    """Who received what about one subject, and why: the answer to an access request."""
    latest: dict[str, DecisionRecord] = {}
    counts: dict[str, Counter[str]] = {}
    sets: dict[str, tuple[set[str], set[str], set[str]]] = {}
    dates: dict[str, list[datetime]] = {}
    types: set[str] = set()
    total = 0
    for rec in records:
        if rec.subject_ref != subject_ref:
            continue
        total += 1
        types.add(rec.subject_type)
        if rec.agent not in latest or rec.recorded_at >= latest[rec.agent].recorded_at:
            # Recipient details as last recorded: the current legal name and address.
            latest[rec.agent] = rec
        counts.setdefault(rec.agent, Counter())[rec.outcome] += 1
        if rec.outcome == "disclosed":
            cats, purposes, bases = sets.setdefault(rec.agent, (set(), set(), set()))
            cats |= received(rec)
            purposes.update(rec.purposes)
            bases.update(rec.legal_bases)
            dates.setdefault(rec.agent, []).append(rec.recorded_at)
    recipients = []
    for agent in sorted(latest):
        r = latest[agent].recipient
        cats, purposes, bases = sets.get(agent, (set(), set(), set()))
        when = dates.get(agent, [])
        recipients.append(
            RecipientSummary(
                agent,
                r.legal_name,
                r.address,
                r.role,
                r.contract,
                counts[agent]["disclosed"],
                counts[agent]["withheld"],
                counts[agent]["erasure_notice"],
                sorted(cats),
                sorted(purposes),
                sorted(bases),
                min(when, default=None),
                max(when, default=None),
            )
        )
    return SubjectReport(subject_ref, _now(), sorted(types), total, recipients)


def summarize_agent(
    records: Iterable[DecisionRecord],
    agent: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AgentReport:
    outcomes: Counter[str] = Counter()
    cats: Counter[str] = Counter()
    purposes: Counter[str] = Counter()
    events: Counter[str] = Counter()
    months: Counter[str] = Counter()
    subjects: dict[str, str] = {}
    recipient: dict[str, Any] | None = None
    latest: datetime | None = None
    first = last = None
    count = 0
    for rec in records:
        if rec.agent != agent:
            continue
        count += 1
        outcomes[rec.outcome] += 1
        events[rec.event_type] += 1
        subjects[rec.subject_ref] = rec.subject_type
        if latest is None or rec.recorded_at >= latest:
            latest, recipient = rec.recorded_at, rec.recipient.model_dump()
        first = rec.recorded_at if first is None or rec.recorded_at < first else first
        last = rec.recorded_at if last is None or rec.recorded_at > last else last
        if rec.outcome == "disclosed":
            cats.update(received(rec))
            purposes.update(set(rec.purposes))
            months[rec.recorded_at.astimezone(UTC).strftime("%Y-%m")] += 1
    return AgentReport(
        agent,
        _now(),
        since,
        until,
        recipient,
        count,
        dict(sorted(outcomes.items())),
        len(subjects),
        dict(sorted(Counter(subjects.values()).items())),
        dict(sorted(cats.items())),
        dict(sorted(purposes.items())),
        dict(sorted(events.items())),
        dict(sorted(months.items())),
        first,
        last,
    )


def for_own_marketing(rec: DecisionRecord) -> bool:
    return (
        rec.outcome == "disclosed"
        and rec.recipient.role == "third_party"
        and any(covers(root, p) for p in rec.purposes for root in SHINE_THE_LIGHT_PURPOSES)
    )


def summarize_shine_the_light(records: Iterable[DecisionRecord], year: int) -> ShineTheLightReport:
    """Third parties that received personal information for their own direct marketing
    in ``year`` (UTC), with the categories they received."""
    acc: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.recorded_at.astimezone(UTC).year != year or not for_own_marketing(rec):
            continue
        a = acc.setdefault(
            rec.agent, {"rec": rec, "cats": set(), "purposes": set(), "n": 0, "subjects": {}}
        )
        if rec.recorded_at >= a["rec"].recorded_at:
            a["rec"] = rec
        a["cats"] |= received(rec)
        a["purposes"].update(rec.purposes)
        a["n"] += 1
        a["subjects"][rec.subject_ref] = rec.subject_type
    parties = []
    for agent in sorted(acc):
        a = acc[agent]
        kinds = Counter(a["subjects"].values())
        parties.append(
            ThirdPartySummary(
                agent,
                a["rec"].recipient.legal_name,
                a["rec"].recipient.address,
                sorted(a["cats"]),
                sorted(a["purposes"]),
                a["n"],
                len(a["subjects"]),
                kinds["consumer"],
                kinds["business"],
            )
        )
    categories = sorted({c for p in parties for c in p.categories})
    return ShineTheLightReport(year, _now(), categories, parties)


# -- over the store -----------------------------------------------------------------------


def subject_report(store: LedgerStore, subject_ref: str) -> SubjectReport:
    return summarize_subject(
        iter_records(store, RecordFilter(subject_ref=subject_ref)), subject_ref
    )


def agent_report(
    store: LedgerStore, agent: str, *, since: datetime | None = None, until: datetime | None = None
) -> AgentReport:
    flt = RecordFilter(agent=agent, since=since, until=until)
    return summarize_agent(iter_records(store, flt), agent, since=since, until=until)


def shine_the_light_report(store: LedgerStore, year: int) -> ShineTheLightReport:
    flt = RecordFilter(
        outcome="disclosed",
        recipient_role="third_party",
        since=datetime(year, 1, 1, tzinfo=UTC),
        until=datetime(year + 1, 1, 1, tzinfo=UTC),
    )
    return summarize_shine_the_light(iter_records(store, flt), year)


def disclosures_over_time(
    store: LedgerStore, flt: RecordFilter | None = None, *, period: str = "day"
) -> dict[str, dict[str, int]]:
    """agent -> period (``YYYY-MM-DD`` or ``YYYY-MM``) -> disclosures: the review chart."""
    fmt = {"day": "%Y-%m-%d", "month": "%Y-%m"}[period]
    out: dict[str, Counter[str]] = {}
    for rec in iter_records(store, (flt or RecordFilter()).but(outcome="disclosed")):
        out.setdefault(rec.agent, Counter())[rec.recorded_at.astimezone(UTC).strftime(fmt)] += 1
    return {a: dict(sorted(c.items())) for a, c in sorted(out.items())}


def categories_by_agent(
    store: LedgerStore, flt: RecordFilter | None = None
) -> dict[str, dict[str, int]]:
    """category -> agent -> disclosures carrying it: the categories x agents matrix."""
    out: dict[str, Counter[str]] = {}
    for rec in iter_records(store, (flt or RecordFilter()).but(outcome="disclosed")):
        for cat in received(rec):
            out.setdefault(cat, Counter())[rec.agent] += 1
    return {c: dict(sorted(a.items())) for c, a in sorted(out.items())}
