"""Reports over the log: access request (one subject), one agent, and the yearly
"Shine the Light" disclosure (California Civil Code §1798.83). Disclosures made outside
the stream (``gateway.manual``) are records like the others and count in every report;
the access report also lists the requests they answered.

Each report is computed by a pure function over an iterable of records (``summarize_*``),
so tests and the review page can feed it any records; the store-level wrappers pick the
records with a filter and stream them through. Categories counted as *received* are those
sent raw or transformed; removed ones never left the gateway.

Before a report, ``subject_known`` and ``agents_in_log`` tell a name the log has never
seen (a typo) from one whose report is simply empty, and ``latest_recipients`` gives each
agent's recipient as last recorded, for listing the agents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa

from gateway.ledger import schema as t
from gateway.ledger.query import RecordFilter, iter_records
from gateway.ledger.store import LedgerStore
from gateway.manual import is_manual
from gateway.policy import Policy
from gateway.records import DecisionRecord, Recipient
from gateway.taxonomy import covers, default_taxonomy

# Purposes that mean "for the recipient's own direct marketing" when the recipient is a
# third party (a service provider acts only on the company's behalf). A purpose the
# taxonomy declares as the recipient's own marketing counts whoever the recipient is.
SHINE_THE_LIGHT_PURPOSES: Final = ("marketing", "third_party_sharing")
# Sharing with a third party that is no marketing of anyone's: answering legal process.
NOT_MARKETING_SHARING: Final = ("third_party_sharing.legal_obligation",)


def _now() -> datetime:
    return datetime.now(UTC)


def received(rec: DecisionRecord) -> set[str]:
    return {*rec.categories_sent, *rec.categories_transformed}


def disclosed_at(rec: DecisionRecord) -> datetime:
    """When the record's data left: for a disclosure made outside the stream, the time it
    was made (recorded later); for the stream's, when the gateway recorded and sent it."""
    return rec.occurred_at if is_manual(rec) else rec.recorded_at


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
    # The requests that disclosures made outside the stream answered (a court order's
    # number, a ticket), as recorded.
    references: list[str] = field(default_factory=list)
    # An aggregate-only recipient: how many of the subject's events counted towards the
    # statistics it received (nothing about the subject itself was sent), and that in
    # words.
    contributions: int = 0
    aggregate_statement: str = ""


@dataclass
class SubjectReport:
    subject_ref: str  # the current pseudonym period's reference
    generated_at: datetime
    subject_types: list[str]
    records: int
    recipients: list[RecipientSummary]
    # Every reference the report covers (the subject's refs of every pseudonym period,
    # current first).
    subject_refs: list[str] = field(default_factory=list)

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
    statement: str = ""  # the answer in one sentence: none, or how many and to whom

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


_EVENT_WORDS = {"site.visit": ("visit", "visits"), "order.placed": ("order", "orders")}


def _plural(n: int, event_type: str) -> str:
    one, many = _EVENT_WORDS.get(event_type, (f"{event_type} event", f"{event_type} events"))
    return f"{n} {one if n == 1 else many}"


def aggregate_statement(
    legal_name: str,
    event_types: Counter[str],
    first: datetime | None,
    last: datetime | None,
    policy: Policy | None,
    agent: str,
) -> str:
    """In words: the subject's visits and orders counted towards aggregate statistics the
    recipient received -- which measures, over which windows -- and that those statistics
    do not identify them."""
    from gateway.aggregates import MEASURES

    what = " and ".join(_plural(n, ev) for ev, n in sorted(event_types.items()))
    when = ""
    if first is not None and last is not None:
        a, b = short_date(first), short_date(last)
        when = f" (from {a} to {b})" if a != b else f" (on {a})"
    spec = None
    if policy is not None and agent in policy.agents:
        spec = policy.agents[agent].aggregate
    if spec is not None:
        measures = ", ".join(MEASURES[m][1] for m in spec.measures)
        how = (
            f"statistics computed per {' and per '.join(spec.windows)} window ({measures}), "
            f"broken down by {', '.join(d.replace('_', ' ') for d in spec.dimensions)}. "
            f"A figure is sent only when at least {spec.k} different customers are behind "
            "it"
        )
    else:
        how = "statistics (counts and totals per time window)"
    return (
        f"Your {what}{when} contributed to aggregate statistics sent to {legal_name}: {how}. "
        "These statistics do not identify you: they carry no name, customer number, "
        "pseudonym, session or address of yours, and nothing about you alone was sent."
    )


def short_date(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def summarize_subject(
    records: Iterable[DecisionRecord],
    subject_ref: str | Sequence[str],
    policy: Policy | None = None,
) -> SubjectReport:
    """Who received what about one subject, and why: the answer to an access request.
    ``subject_ref``: the subject's reference, or its references of every pseudonym period
    (current first). ``policy``: to state which measures and windows an aggregate-only
    recipient's statistics have (without it, the statement is general)."""
    refs = [subject_ref] if isinstance(subject_ref, str) else list(subject_ref)
    if not refs:
        raise ValueError("a subject report needs at least one subject reference")
    wanted = set(refs)
    latest: dict[str, DecisionRecord] = {}
    counts: dict[str, Counter[str]] = {}
    sets: dict[str, tuple[set[str], set[str], set[str]]] = {}
    references: dict[str, set[str]] = {}
    dates: dict[str, list[datetime]] = {}
    contributed: dict[str, Counter[str]] = {}
    contributed_at: dict[str, list[datetime]] = {}
    types: set[str] = set()
    total = 0
    for rec in records:
        if rec.subject_ref not in wanted:
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
            dates.setdefault(rec.agent, []).append(disclosed_at(rec))
            if is_manual(rec) and rec.reason:
                references.setdefault(rec.agent, set()).add(rec.reason)
        elif rec.outcome == "contributed":
            contributed.setdefault(rec.agent, Counter())[rec.event_type] += 1
            contributed_at.setdefault(rec.agent, []).append(rec.occurred_at)
            _, purposes, bases = sets.setdefault(rec.agent, (set(), set(), set()))
            purposes.update(rec.purposes)
            bases.update(rec.legal_bases)
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
                sorted(references.get(agent, ())),
                counts[agent]["contributed"],
                aggregate_statement(
                    r.legal_name,
                    contributed[agent],
                    min(contributed_at[agent]),
                    max(contributed_at[agent]),
                    policy,
                    agent,
                )
                if agent in contributed
                else "",
            )
        )
    return SubjectReport(refs[0], _now(), sorted(types), total, recipients, refs)


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
            months[disclosed_at(rec).astimezone(UTC).strftime("%Y-%m")] += 1
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


def own_marketing_uses() -> tuple[str, ...]:
    """Data uses that are the recipient's own marketing, whatever its role."""
    return default_taxonomy().own_marketing_uses


def for_own_marketing(rec: DecisionRecord) -> bool:
    """Whether the record is a disclosure for the recipient's own direct marketing: to a
    third party for a marketing or sharing purpose, or to anyone for a purpose that is
    the recipient's own marketing."""
    if rec.outcome != "disclosed":
        return False
    if any(covers(use, p) for p in rec.purposes for use in own_marketing_uses()):
        return True
    return rec.recipient.role == "third_party" and any(
        covers(root, p) and not any(covers(x, p) for x in NOT_MARKETING_SHARING)
        for p in rec.purposes
        for root in SHINE_THE_LIGHT_PURPOSES
    )


def shine_the_light_statement(year: int, parties: list[ThirdPartySummary]) -> str:
    """The report's answer in one sentence."""
    if not parties:
        return (
            f"In {year} no customer's personal information was disclosed to a third party "
            f"for its own direct marketing purposes."
        )
    subjects = sum(p.subjects for p in parties)
    names = "; ".join(p.legal_name for p in parties)
    return (
        f"In {year} personal information about {subjects} customer(s) was disclosed to "
        f"{len(parties)} third part{'y' if len(parties) == 1 else 'ies'} for their own "
        f"direct marketing purposes: {names}."
    )


def summarize_shine_the_light(records: Iterable[DecisionRecord], year: int) -> ShineTheLightReport:
    """Third parties that received personal information for their own direct marketing
    in ``year`` (UTC, by when the log recorded it), with the categories they received."""
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
    return ShineTheLightReport(
        year, _now(), categories, parties, shine_the_light_statement(year, parties)
    )


# -- over the store -----------------------------------------------------------------------


def subject_report(
    store: LedgerStore, subject_ref: str | Sequence[str], policy: Policy | None = None
) -> SubjectReport:
    """The access-request report of the subject with reference ``subject_ref``, or with any
    of several (its refs of every pseudonym period, current first)."""
    refs = (subject_ref,) if isinstance(subject_ref, str) else tuple(subject_ref)
    return summarize_subject(iter_records(store, RecordFilter(subject_refs=refs)), refs, policy)


def agent_report(
    store: LedgerStore, agent: str, *, since: datetime | None = None, until: datetime | None = None
) -> AgentReport:
    flt = RecordFilter(agent=agent, since=since, until=until)
    return summarize_agent(iter_records(store, flt), agent, since=since, until=until)


def shine_the_light_report(store: LedgerStore, year: int) -> ShineTheLightReport:
    """The year's report from the log: disclosures to third parties, and disclosures to
    anyone for a purpose that is the recipient's own marketing (each record once)."""
    year_flt = RecordFilter(
        outcome="disclosed",
        since=datetime(year, 1, 1, tzinfo=UTC),
        until=datetime(year + 1, 1, 1, tzinfo=UTC),
    )
    filters = [year_flt.but(recipient_role="third_party")]
    filters += [year_flt.but(purpose=use) for use in own_marketing_uses()]

    def records() -> Iterator[DecisionRecord]:
        seen: set[str] = set()
        for flt in filters:
            for rec in iter_records(store, flt):
                if rec.record_id not in seen:
                    seen.add(rec.record_id)
                    yield rec

    return summarize_shine_the_light(records(), year)


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


# -- names the log knows ------------------------------------------------------------------


def subject_known(store: LedgerStore, subject_ref: str) -> bool:
    """Whether any record names the subject (a pruned record no longer names anyone)."""
    c = t.records.c
    q = sa.select(c.record_id).where(c.subject_ref == subject_ref).limit(1)
    with store.engine.connect() as conn:
        return conn.execute(q).first() is not None


def agents_in_log(store: LedgerStore) -> list[str]:
    """Every agent a record names, pruned records included, sorted."""
    c = t.records.c
    with store.engine.connect() as conn:
        return list(conn.execute(sa.select(c.agent).distinct().order_by(c.agent)).scalars())


def latest_recipients(store: LedgerStore) -> dict[str, Recipient]:
    """agent -> its recipient (legal name, address, role, contract) as last recorded,
    from the newest record of each agent whose body is kept."""
    c = t.records.c
    out: dict[str, Recipient] = {}
    with store.engine.connect() as conn:
        agents = list(
            conn.execute(
                sa.select(c.agent).where(c.body.is_not(None)).distinct().order_by(c.agent)
            ).scalars()
        )
        for agent in agents:
            body = conn.execute(
                sa.select(c.body)
                .where(c.agent == agent, c.body.is_not(None))
                .order_by(c.recorded_at.desc(), c.shard.desc(), c.seq.desc())
                .limit(1)
            ).scalar_one()
            out[agent] = DecisionRecord.from_json(body).recipient
    return out


def policy_recipients(policy: Policy) -> dict[str, Recipient]:
    """agent -> its recipient as the policy declares it (for agents with no record yet)."""
    return {
        name: Recipient(name=name, **agent.recipient.model_dump())
        for name, agent in policy.agents.items()
    }


def no_subject_records(what: str = "customer id") -> str:
    """What to say when no record names a subject, and how to check the id."""
    return (
        f"no records for this {what}: check it is spelled exactly as the customer system"
        " writes it (case and punctuation count), and that the pseudonym key is the"
        " gateway's own (with another key every id looks unknown); records pruned by"
        " retention no longer name their subject"
    )


def unknown_agent(agent: str, known: Iterable[str]) -> str:
    """What to say about an agent name no record and no policy names."""
    names = ", ".join(sorted(set(known))) or "none yet"
    return f"unknown agent {agent!r}: no record names it; known agents: {names}"
