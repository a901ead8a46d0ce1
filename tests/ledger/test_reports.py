"""Reports match the records put in, recomputed here independently, on both back ends; and
every output format is well-formed and escaped."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest

from gateway.crypto import SigningKey
from gateway.ledger import render
from gateway.ledger.reports import (
    agent_report,
    categories_by_agent,
    disclosures_over_time,
    shine_the_light_report,
    subject_report,
    summarize_shine_the_light,
)
from gateway.ledger.store import LedgerStore, open_store
from gateway.records import DecisionRecord
from tests.ledger.data import CUSTOMERS, PROFILES, make_record, make_records, ref


@pytest.fixture(scope="module")
def records() -> list[DecisionRecord]:
    recs = make_records(300, seed=3)
    # A consumer's data reaching a reseller for marketing would break the policy; the
    # report must still show it (that is what it is for), under consumer subjects.
    recs.append(make_record("reseller", "C-1001", datetime(2025, 6, 1, tzinfo=UTC), seq=9001))
    return recs


@pytest.fixture
def store(url: str, key: SigningKey, records: list[DecisionRecord]) -> Iterator[LedgerStore]:
    with open_store(url, signer=key, checkpoint_every=100) as s:
        for i in range(0, len(records), 64):
            s.append(records[i : i + 64], shard=i // 64 % 3)
        yield s


def got(r: DecisionRecord) -> set[str]:
    return set(r.categories_sent) | set(r.categories_transformed)


@pytest.mark.parametrize("customer", sorted(CUSTOMERS))
def test_subject_report(store: LedgerStore, records: list[DecisionRecord], customer: str) -> None:
    mine = [r for r in records if r.subject_ref == ref(customer)]
    rep = subject_report(store, ref(customer))
    assert rep.records == len(mine)
    assert rep.subject_types == [CUSTOMERS[customer]]
    assert [s.agent for s in rep.recipients] == sorted({r.agent for r in mine})
    for s in rep.recipients:
        rs = [r for r in mine if r.agent == s.agent]
        disc = [r for r in rs if r.outcome == "disclosed"]
        assert s.legal_name == rs[0].recipient.legal_name
        assert (s.address, s.role, s.contract) == (
            rs[0].recipient.address,
            rs[0].recipient.role,
            rs[0].recipient.contract,
        )
        assert s.disclosures == len(disc)
        assert s.withheld == sum(r.outcome == "withheld" for r in rs)
        assert s.erasure_notices == sum(r.outcome == "erasure_notice" for r in rs)
        assert s.categories == sorted(set().union(*(got(r) for r in disc)))
        assert s.purposes == sorted({p for r in disc for p in r.purposes})
        assert s.legal_bases == sorted({b for r in disc for b in r.legal_bases})
        assert s.first_disclosed == min((r.recorded_at for r in disc), default=None)
        assert s.last_disclosed == max((r.recorded_at for r in disc), default=None)
    if customer == "C-1004":  # erased: every agent that got data was notified
        notified = {s.agent for s in rep.recipients if s.erasure_notices}
        assert notified == {s.agent for s in rep.recipients if s.disclosures}


def test_unknown_subject_has_an_empty_report(store: LedgerStore) -> None:
    rep = subject_report(store, ref("C-9999"))
    assert rep.records == 0 and rep.recipients == []


@pytest.mark.parametrize("agent", sorted(PROFILES))
def test_agent_report(store: LedgerStore, records: list[DecisionRecord], agent: str) -> None:
    since, until = datetime(2024, 1, 20, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    rs = [r for r in records if r.agent == agent and since <= r.recorded_at < until]
    disc = [r for r in rs if r.outcome == "disclosed"]
    rep = agent_report(store, agent, since=since, until=until)
    assert rep.records == len(rs)
    outcomes: dict[str, int] = defaultdict(int)
    for r in rs:
        outcomes[r.outcome] += 1
    assert rep.outcomes == dict(sorted(outcomes.items()))
    assert rep.subjects == len({r.subject_ref for r in rs})
    cats: dict[str, int] = defaultdict(int)
    for r in disc:
        for c in got(r):
            cats[c] += 1
    assert rep.categories == dict(sorted(cats.items()))
    assert sum(rep.months.values()) == len(disc)
    assert rep.first == min(r.recorded_at for r in rs)
    assert rep.recipient is not None and rep.recipient["name"] == agent


@pytest.mark.parametrize("year", [2024, 2025, 2023])
def test_shine_the_light(store: LedgerStore, records: list[DecisionRecord], year: int) -> None:
    hits = [
        r
        for r in records
        if r.recorded_at.year == year
        and r.outcome == "disclosed"
        and r.recipient.role == "third_party"
        and any(p.split(".")[0] in ("marketing", "third_party_sharing") for p in r.purposes)
    ]
    rep = shine_the_light_report(store, year)
    assert [p.agent for p in rep.third_parties] == sorted({r.agent for r in hits})
    assert rep.categories == (sorted(set().union(*(got(r) for r in hits))) if hits else [])
    for p in rep.third_parties:
        mine = [r for r in hits if r.agent == p.agent]
        assert p.disclosures == len(mine)
        assert p.legal_name == "Lens Partners Wholesale GmbH"
        assert p.categories == sorted(set().union(*(got(r) for r in mine)))
        kinds = {r.subject_ref: r.subject_type for r in mine}
        assert p.subjects == len(kinds)
        assert p.consumer_subjects == sum(v == "consumer" for v in kinds.values())
        assert p.business_subjects == sum(v == "business" for v in kinds.values())
    if year == 2025:
        assert rep.third_parties and rep.third_parties[0].consumer_subjects == 1
    if year == 2023:
        assert rep.third_parties == []
    # Service providers never count, even with marketing purposes (email does marketing).
    assert all(p.agent != "email" for p in rep.third_parties)


def test_shine_the_light_states_its_answer_and_counts_own_marketing_to_any_recipient(
    url: str, key: SigningKey
) -> None:
    """ "We have and follow a policy of not disclosing customers' personal information to
    third parties for direct marketing purposes": the report says so in a sentence, and a
    disclosure for the recipient's own marketing counts whatever role the recipient has."""
    when = datetime(2023, 5, 1, tzinfo=UTC)
    ours = make_record("email", "C-1001", when, seq=9100)  # our marketing, by our provider
    rep = summarize_shine_the_light([ours], 2023)
    assert rep.third_parties == []
    assert rep.statement == (
        "In 2023 no customer's personal information was disclosed to a third party for its "
        "own direct marketing purposes."
    )
    theirs = make_record("email", "C-1002", when, seq=9101).model_copy(
        update={"purposes": ["third_party_sharing.marketing"]}
    )
    with open_store(url, signer=key) as s:
        s.append([ours, theirs], shard=0)
        rep = shine_the_light_report(s, 2023)
    assert [(p.agent, p.subjects, p.disclosures) for p in rep.third_parties] == [("email", 1, 1)]
    assert rep.statement == (
        "In 2023 personal information about 1 customer(s) was disclosed to 1 third party for "
        "their own direct marketing purposes: MailRelay <Services> & Co."
    )
    assert rep.to_dict()["statement"] == rep.statement


def test_chart_series(store: LedgerStore, records: list[DecisionRecord]) -> None:
    series = disclosures_over_time(store, period="month")
    disc = [r for r in records if r.outcome == "disclosed"]
    assert sum(sum(v.values()) for v in series.values()) == len(disc)
    matrix = categories_by_agent(store)
    assert matrix["user.contact.email"].get("email") == sum(
        "user.contact.email" in got(r) for r in disc if r.agent == "email"
    )


# -- formats ------------------------------------------------------------------------------


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.data: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.data.append(data)


def test_formats_are_well_formed_and_escaped(store: LedgerStore) -> None:
    rep = subject_report(store, ref("B-2001"))
    doc = render.subject_document(rep)
    data = orjson.loads(render.render(doc, "json", rep.to_dict()))
    assert data["subject_ref"] == ref("B-2001")
    assert {r["agent"] for r in data["recipients"]} == {s.agent for s in rep.recipients}
    rows = list(csv.DictReader(io.StringIO(render.to_csv(doc))))
    assert [r["agent"] for r in rows] == [s.agent for s in rep.recipients]
    page = render.to_html(doc)
    # The email vendor's legal name carries markup characters: escaped, never tags.
    assert "MailRelay &lt;Services&gt; &amp; Co" in page and "<Services>" not in page
    parser = _Text()
    parser.feed(page)
    assert "services" not in parser.tags
    assert "MailRelay <Services> & Co" in "".join(parser.data)


def test_hostile_values_cannot_inject(tmp_path: Path) -> None:
    evil = make_record("email", "C-1001", datetime(2024, 5, 5, tzinfo=UTC)).model_copy(
        update={"reason": '=HYPERLINK("http://x")<script>alert(1)</script>[bold]x[/bold]'}
    )
    doc = render.records_document([evil])
    doc.sections[0].columns.append("reason")
    doc.sections[0].rows[0].append(evil.reason or "")
    doc.screen = None  # show the full section, reason included, on the terminal too
    page = render.to_html(doc)
    assert "<script>" not in page and "&lt;script&gt;" in page
    cell = next(csv.reader(io.StringIO(render.to_csv(doc).splitlines()[1])))[-1]
    assert cell.startswith("'=")
    from rich.console import Console

    out = io.StringIO()
    render.print_table(doc, Console(file=out, width=400))
    assert "[bold]x[/bold]" in out.getvalue()


def test_agent_report_csv_stacks_sections(store: LedgerStore) -> None:
    rep = agent_report(store, "reseller")
    rows = list(csv.DictReader(io.StringIO(render.to_csv(render.agent_document(rep)))))
    cats = {r["category"]: int(r["count"]) for r in rows if r["section"] == "Categories received"}
    assert cats == rep.categories
