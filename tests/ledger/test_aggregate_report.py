"""An access report about a customer whose visits and orders counted towards the analytics
provider's aggregates: said in words, honestly, through the store and the renderers."""

from __future__ import annotations

import copy

from gateway.crypto import SigningKey
from gateway.dev.samples import scenario
from gateway.ledger import render
from gateway.ledger.reports import subject_report, summarize_subject
from gateway.ledger.store import open_store
from gateway.records import DecisionRecord
from gateway.runtime import Core
from tests.conftest import with_aggregates


def customer_records(core: Core, cid: str) -> list[DecisionRecord]:
    events = []
    for n, e in enumerate(scenario()):
        if e["event_type"] in ("customer.registered", "site.visit", "order.placed"):
            e = copy.deepcopy(e)
            e["subject"]["customer_id"] = cid
            e["event_id"] = f"evt-agg-report-{n:04d}"
            events.append(e)
    out = with_aggregates(core, events)
    return [r for res in out for r in res.records]


def test_the_access_report_says_the_customer_contributed_to_aggregates(core: Core) -> None:
    cid = "C-agg-report"
    records = customer_records(core, cid)
    ref = core.pipeline.subject_ref(cid)
    rep = summarize_subject(records, ref, core.policy)
    (analytics,) = [s for s in rep.recipients if s.agent == "analytics"]
    mine = [r for r in records if r.subject_ref == ref and r.agent == "analytics"]
    visits = sum(r.event_type == "site.visit" and r.outcome == "contributed" for r in mine)
    orders = sum(r.event_type == "order.placed" and r.outcome == "contributed" for r in mine)
    assert visits and orders and analytics.contributions == visits + orders
    # (A visit the browser sent with GPC did not count: withheld.)
    assert analytics.withheld == sum(r.outcome == "withheld" for r in mine)
    assert (analytics.disclosures, analytics.categories) == (0, [])  # nothing about them left
    text = analytics.aggregate_statement
    assert text.startswith(f"Your {orders} orders and {visits} visit{'s' if visits > 1 else ''}")
    assert "contributed to aggregate statistics sent to Metricsmith Analytics Ltd." in text
    assert "per 5m and per 1h window" in text and "distinct customers" in text
    assert "at least 10 different customers" in text
    assert "do not identify you" in text
    # Other recipients carry no such statement.
    assert all(not s.aggregate_statement for s in rep.recipients if s.agent != "analytics")
    # Without the policy the statement is general, and still honest.
    general = summarize_subject(records, ref).recipients
    (g,) = [s for s in general if s.agent == "analytics"]
    assert "counts and totals per time window" in g.aggregate_statement


def test_the_report_from_the_store_renders_the_statement(
    core: Core, url: str, key: SigningKey
) -> None:
    cid = "C-agg-report-2"
    records = customer_records(core, cid)
    with open_store(url, signer=key) as store:
        store.append(records, shard=0)
        rep = subject_report(store, core.pipeline.subject_ref(cid), core.policy)
    doc = render.subject_document(rep)
    for fmt in ("html", "csv", "json"):
        out = render.render(doc, fmt, rep.to_dict())
        assert "contributed to aggregate statistics" in out, fmt
