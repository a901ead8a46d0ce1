"""What the review pages say beyond the numbers: why a record was withheld, who each
recipient is, a time chart per day, and a plain answer for a customer id or an agent name
the log does not know."""

from __future__ import annotations

import csv
import html
import io
import re

from gateway.ledger.query import RecordFilter, list_records
from gateway.ledger.reports import agents_in_log, latest_recipients
from gateway.records import Recipient
from gateway.web import charts
from tests.ledger.data import ref
from tests.web.helpers import Client, Seeded, Server, review_config

KNOWN = "known agents: analytics, email, payments, reseller, shipping"


def test_the_records_list_says_why_a_record_was_withheld(lite: Seeded) -> None:
    c = lite.client()
    withheld = list_records(lite.store, RecordFilter(outcome="withheld"), limit=25)
    page = c.page("/records?outcome=withheld&per_page=25").text
    reasons = re.findall(r'<td class="reason" data-label="reason">([^<]*)</td>', page)
    assert reasons == [html.escape(r.reason or "—") for r in withheld]
    assert all(r.reason for r in withheld)  # the case shows real reasons
    assert "<th>reason</th>" in page
    rows = list(csv.DictReader(io.StringIO(c.get("/records?outcome=withheld&format=csv").text)))
    assert rows and all(row["reason"] == "nothing permitted for this subject" for row in rows)


def test_an_unknown_customer_id_is_said_plainly(lite: Seeded) -> None:
    c = lite.client()
    page = c.page("/subject?subject=C-9999", follow=True).text
    assert 'id="no-recipients"' in page
    assert "No records for this customer id: check it is spelled exactly" in page
    listed = c.page("/records?subject=C-9999", follow=True).text
    assert "No records for this customer id" in listed
    # A known customer whose records fall outside the filter is not "unknown".
    known = c.page(f"/records?subject_ref={ref('C-1001')}&since=2030-01-01").text
    assert 'id="no-records"' in known and "No records for this customer id" not in known


def test_an_unknown_agent_is_said_plainly(lite: Seeded) -> None:
    c = lite.client()
    page = c.page("/agents/nobdy").text
    assert 'id="unknown-agent"' in page
    assert f"Unknown agent &#39;nobdy&#39;: no record names it; {KNOWN}." in page
    listed = c.page("/records?agent=nobdy").text
    assert "Unknown agent &#39;nobdy&#39;" in listed and KNOWN in listed
    assert 'id="unknown-agent"' not in c.page("/agents/email").text
    # An agent with records, just none in the window asked for, is not unknown either.
    quiet = c.page("/agents/email?since=2030-01-01").text
    assert 'id="unknown-agent"' not in quiet and "No records for email in this period" in quiet


def test_the_agents_page_names_each_recipient(lite: Seeded) -> None:
    c = lite.client()
    page = c.page("/agents").text
    recipients = latest_recipients(lite.store)
    assert sorted(recipients) == agents_in_log(lite.store)
    for agent, r in recipients.items():
        row = page.split(f'<tr data-agent="{agent}">', 1)[1].split("</tr>", 1)[0]
        assert html.escape(r.legal_name, quote=True) in row
        assert r.role.replace("_", " ") in row
        assert r.contract and r.contract in row
    assert "MailRelay &lt;Services&gt; &amp; Co" in page  # escaped, not markup


def test_agents_only_in_the_policy_are_known(lite: Seeded) -> None:
    declared = Recipient(
        name="archive",
        legal_name="Cold Storage Archive AG",
        address="Bahnhofstrasse 1, Zurich",
        role="service_provider",
        contract="DPA-2025-ARCH-001",
    )
    server = Server(review_config(lite.store, lite.keys, policy_recipients={"archive": declared}))
    try:
        c = Client(server)
        assert c.login().status == 303
        agents = c.page("/agents").text
        row = agents.split('<tr data-agent="archive">', 1)[1].split("</tr>", 1)[0]
        assert "Cold Storage Archive AG" in row and "DPA-2025-ARCH-001" in row
        assert "in the policy, no records yet" in row
        page = c.page("/agents/archive").text
        assert 'id="unknown-agent"' not in page and "Cold Storage Archive AG" in page
        assert "archive" in c.page("/agents/nobdy").text.split("known agents:", 1)[1]
    finally:
        server.close()


def test_the_time_chart_has_a_column_per_day() -> None:
    colors = charts.agent_colors(["a", "b"])
    series = {"a": {"2024-03-01": 30, "2024-03-03": 1}, "b": {"2024-03-01": 2}}
    svg = str(charts.over_time_chart(series, "day", colors))
    wide, narrow = svg.split('<svg class="narrow ', 1)
    for drawing in (wide, narrow):
        days = re.findall(r'<g class="period" data-period="([^"]+)">', drawing)
        assert days == ["2024-03-01", "2024-03-02", "2024-03-03"]  # quiet days count too
        first = drawing.split('data-period="2024-03-01">', 1)[1].split("</g>", 1)[0]
        assert "a · 2024-03-01: 30" in first and "b · 2024-03-01: 2" in first
        assert first.count("<rect") == 2 and ">32</text>" in first  # one column, its total
        assert "<circle" not in drawing  # no dots
    # One busy day is one column, not a column of dots.
    one = str(charts.over_time_chart({"a": {"2024-03-01": 500}}, "day", colors))
    assert one.count('<g class="period"') == 2  # the wide and the narrow drawing
    # Many periods: a line per agent.
    many = {"a": {f"2024-{m:02d}": m for m in range(1, 13)} | {"2025-01": 1}}
    assert 'class="chart line-chart"' in charts.over_time_chart(many, "month", colors)


def test_the_dashboard_charts_days_as_columns(lite: Seeded) -> None:
    c = lite.client()
    page = c.page("/?since=2024-03-01&until=2024-03-10").text
    wide = page.split('<svg class="chart column-chart over-time"', 1)[1].split("</svg>", 1)[0]
    assert len(re.findall(r'<g class="period"', wide)) == 10


def test_narrow_drawings_keep_text_readable() -> None:
    colors = charts.agent_colors(["a"])
    drawings = {
        "line": charts.line_chart(
            {"a": {f"2024-01-{d:02d}": d for d in range(1, 29)}}, "day", colors, narrow=True
        ),
        "columns": charts.column_chart({"2024-01": 3, "2024-12": 4}, "month", "#000", narrow=True),
        "bars": charts.stacked_bars({"analytics": {"disclosed": 9, "withheld": 1}}, narrow=True),
    }
    for name, svg in drawings.items():
        assert svg.startswith('<svg class="narrow chart'), name
        assert 'viewBox="0 0 340 ' in svg, name
        labels = re.findall(r'<text class="tick" x="[^"]+" y="[^"]+" text-anchor="middle">', svg)
        assert len(labels) <= 4, name  # fewer labels, each with room
    assert ">01-01<" in drawings["line"]  # days as MM-DD on a narrow axis
