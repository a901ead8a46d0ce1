"""The review page's pages: each handler validates its parameters (``params``), runs the
ledger queries on a worker thread, and answers with a page, JSON or a download.

A customer id given as ``?subject=`` is swapped by a redirect, before anything else
happens, for the log's pseudonymous subject references of every pseudonym period
(``subject_ref`` repeated, current period first), so raw customer ids do not stay in
links, bookmarks or history, and a subject's records from before a pseudonym rotation are
found with the rest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from gateway.ledger import render
from gateway.ledger.location import RecordInLog, locate_record
from gateway.ledger.query import RecordFilter, count_records, iter_records, list_records
from gateway.ledger.reports import (
    agent_report,
    agents_in_log,
    categories_by_agent,
    disclosures_over_time,
    latest_recipients,
    no_subject_records,
    shine_the_light_report,
    subject_known,
    subject_report,
    unknown_agent,
)
from gateway.records import DecisionRecord
from gateway.taxonomy import default_taxonomy
from gateway.web import charts, params, queries
from gateway.web.config import CONFIG, ReviewConfig, Verification
from gateway.web.middleware import check_csrf
from gateway.web.responses import download, json_response, link, page

DOWNLOADS: Final = ("json", "csv", "html")
_AUTO_DAILY_DAYS: Final = 92  # longer ranges chart per month


def _now() -> datetime:
    return datetime.now(UTC)


def _swap_customer_id(request: web.Request) -> None:
    """Redirect ?subject=CUSTOMER_ID to the same URL with the customer's references of
    every pseudonym period instead (?subject_ref=...&subject_ref=..., current first)."""
    customer = params.customer_id(request.query)
    if customer is None:
        return
    refs = request.app[CONFIG].subject_refs(customer)
    query = [(k, v) for k, v in request.query.items() if k not in ("subject", "subject_ref")]
    query.extend(("subject_ref", ref) for ref in refs)
    raise web.HTTPSeeOther(request.path + "?" + urlencode(query))


async def db(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def _chart_period(requested: str, totals: queries.Totals) -> str:
    # The time axis runs from the first to the last matching record.
    first, last = totals.first, totals.last
    span = (last - first).days + 1 if first and last else 0
    if requested == "auto":
        return "day" if span <= _AUTO_DAILY_DAYS else "month"
    if requested == "day" and span > charts.MAX_DAYS:
        raise params.BadParam("period", "too many days for a daily chart; use month")
    return requested


def _unknown_agent(cfg: ReviewConfig, agent: str) -> str | None:
    """Why ``agent`` names no one (runs on a worker thread), or None if it is known."""
    if agent in cfg.policy_recipients:
        return None
    known = agents_in_log(cfg.store)
    if agent in known:
        return None
    return unknown_agent(agent, [*known, *cfg.policy_recipients])


def _nothing_found(cfg: ReviewConfig, flt: RecordFilter) -> list[str]:
    """When a filter matches nothing, what in it names no one: a subject the log has
    never seen, an agent neither the log nor the policy knows (worker thread)."""
    problems = []
    refs = flt.subject_refs or ((flt.subject_ref,) if flt.subject_ref is not None else ())
    if refs and not any(subject_known(cfg.store, ref) for ref in refs):
        problems.append(no_subject_records())
    if flt.agent is not None:
        problem = _unknown_agent(cfg, flt.agent)
        if problem:
            problems.append(problem)
    return problems


async def dashboard(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    fmt = params.choice(q, "format", ("page", "json"), "page")
    _swap_customer_id(request)
    filters = params.filters(q)
    requested = params.choice(q, "period", params.PERIODS, "auto")
    flt = filters.flt

    def gather() -> dict[str, Any]:
        totals = queries.totals(cfg.store, flt)
        period = _chart_period(requested, totals)
        return {
            "totals": totals,
            "period": period,
            "outcomes": queries.outcomes_by_agent(cfg.store, flt),
            "over_time": disclosures_over_time(cfg.store, flt, period=period),
            "matrix": categories_by_agent(cfg.store, flt),
            "agents": queries.agents(cfg.store),
        }

    data = await db(gather)
    # The dashboard is where integrity is looked at: never show a result older than
    # ``verify_fresh`` there (the schedule keeps every other page within ``verify_every``).
    verification = await cfg.verification(max_age=cfg.verify_fresh)
    totals: queries.Totals = data["totals"]
    outcome_totals: dict[str, int] = {o: 0 for o in params.OUTCOMES}
    for per in data["outcomes"].values():
        for o, n in per.items():
            outcome_totals[o] = outcome_totals.get(o, 0) + n
    if fmt == "json":
        return json_response(
            {
                "filter": filters.values,
                "totals": {
                    "records": totals.records,
                    "subjects": totals.subjects,
                    "agents": totals.agents,
                    "first": totals.first,
                    "last": totals.last,
                    "outcomes": outcome_totals,
                },
                "period": data["period"],
                "disclosures_over_time": data["over_time"],
                "categories_by_agent": data["matrix"],
                "outcomes_by_agent": data["outcomes"],
                "verification": _verification_json(verification),
            }
        )
    colors = charts.agent_colors([*data["agents"], *data["outcomes"]])
    return page(
        request,
        "dashboard.html",
        title="Dashboard",
        filters=filters,
        requested_period=requested,
        period=data["period"],
        totals=totals,
        outcome_totals=outcome_totals,
        verification=verification,
        colors=colors,
        time_chart=charts.over_time_chart(data["over_time"], data["period"], colors),
        bar_chart=charts.responsive(
            charts.stacked_bars(data["outcomes"]),
            charts.stacked_bars(data["outcomes"], narrow=True),
        ),
        heat=charts.heat_table(data["matrix"], sorted(data["outcomes"])),
        agents=data["agents"],
        json_link=link("/", filters.query(format="json")),
        cell_link=lambda agent, category: link(
            "/records",
            filters.query(agent=agent, category=category, outcome="disclosed"),
        ),
    )


def _verification_json(v: Verification) -> dict[str, Any]:
    return {
        "checked_at": v.checked_at,
        "problem": v.problem,
        "report": v.report.to_dict() if v.report else None,
    }


async def records_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    fmt = params.choice(q, "format", ("page", *DOWNLOADS), "page")
    _swap_customer_id(request)
    filters = params.filters(q)
    flt = filters.flt
    # Validated for downloads too (which take every match): junk is a 400 wherever it is.
    per_page = params.integer(q, "per_page", 50, 1, max(params.PER_PAGE))
    page_no = params.integer(q, "page", 1, 1, 10**7)
    if fmt != "page":
        total = await db(count_records, cfg.store, flt)
        if total > cfg.max_export:
            raise params.BadParam(
                "format",
                f"{total} records match, more than {cfg.max_export} per download: narrow the"
                " filter, or use `gateway log export`",
            )
        recs: list[DecisionRecord] = await db(lambda: list(iter_records(cfg.store, flt)))
        return download(render.records_document(recs), fmt, render.records_json(recs), "records")

    def gather() -> tuple[int, list[DecisionRecord], list[str], list[str]]:
        total = count_records(cfg.store, flt)
        recs = list_records(cfg.store, flt, limit=per_page, offset=(page_no - 1) * per_page)
        unknown = _nothing_found(cfg, flt) if total == 0 else []
        return total, recs, queries.agents(cfg.store), unknown

    total, recs, agents, unknown = await db(gather)
    pages = max(1, math.ceil(total / per_page))
    base = filters.query(per_page=per_page) if per_page != 50 else filters.query()
    tax = default_taxonomy()
    return page(
        request,
        "records.html",
        title="Records",
        filters=filters,
        records=recs,
        unknown=unknown,
        total=total,
        page=page_no,
        pages=pages,
        per_page=per_page,
        per_page_choices=params.PER_PAGE,
        first_index=(page_no - 1) * per_page + 1,
        agents=agents,
        outcomes=params.OUTCOMES,
        categories=sorted(tax.categories),
        purposes=sorted(tax.uses),
        page_link=lambda n: link("/records", {**base, "page": n}),
        download_links={f: link("/records", filters.query(format=f)) for f in DOWNLOADS},
        subject_link=lambda ref: link("/subject", {"subject_ref": ref}),
    )


async def record_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    rid = params.record_id(request.match_info["record_id"])
    fmt = params.choice(request.query, "format", ("page", "json"), "page")
    found: RecordInLog | None = await db(locate_record, cfg.store, rid)
    if found is None:
        raise web.HTTPNotFound(reason=f"no record {rid} in the log")
    if fmt == "json":
        return json_response(found.to_json())
    rec = found.record
    return page(
        request,
        "record.html",
        title=f"Record {rid}",
        record_id=rid,
        rec=rec,
        location=found.location,
        subject_link=link("/subject", {"subject_ref": rec.subject_ref}) if rec else "",
    )


async def subject_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    fmt = params.choice(q, "format", ("page", *DOWNLOADS), "page")
    _swap_customer_id(request)
    refs = params.subject_refs(q)
    if not refs:
        if fmt != "page":
            raise params.BadParam("subject", "give a customer id (subject) or subject_ref")
        return page(
            request, "subject.html", title="Access request", ref=None, rep=None, unknown=None
        )
    rep = await db(subject_report, cfg.store, refs)
    doc = render.subject_document(rep)
    if fmt != "page":
        return download(doc, fmt, rep.to_dict(), f"subject-{refs[0]}")
    unknown = None
    if rep.records == 0:
        unknown = no_subject_records()
    # Every period's reference, as one value: the records list and the downloads cover
    # the same history as this report.
    joined = " ".join(refs)
    return page(
        request,
        "subject.html",
        title="Access request",
        ref=refs[0],
        rep=rep,
        unknown=unknown,
        records_link=link("/records", {"subject_ref": joined}),
        download_links={
            f: link("/subject", {"subject_ref": joined, "format": f}) for f in DOWNLOADS
        },
    )


async def agents_page(request: web.Request) -> web.StreamResponse:
    """Every agent the log or the policy knows: who the recipient is (legal name, role,
    contract, as last recorded, else as the policy declares it) and what it was sent."""
    cfg = request.app[CONFIG]
    fmt = params.choice(request.query, "format", ("page", "json"), "page")
    outcomes = await db(queries.outcomes_by_agent, cfg.store, RecordFilter())
    if fmt == "json":
        return json_response(outcomes)
    recipients = {**cfg.policy_recipients, **await db(latest_recipients, cfg.store)}
    names = sorted({*outcomes, *recipients})
    return page(
        request,
        "agents.html",
        title="Agents",
        names=names,
        outcomes=outcomes,
        recipients=recipients,
        policy_problem=cfg.policy_problem,
    )


async def agent_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    agent = params.agent_name(request.match_info["agent"])
    fmt = params.choice(q, "format", ("page", *DOWNLOADS), "page")
    since = params.when(q, "since")
    until = params.when(q, "until", end_of_day=True)
    if since is not None and until is not None and since >= until:
        raise params.BadParam("until", "must be after since")
    rep = await db(agent_report, cfg.store, agent, since=since, until=until)
    doc = render.agent_document(rep)
    if fmt != "page":
        return download(doc, fmt, rep.to_dict(), f"agent-{agent}")
    unknown = await db(_unknown_agent, cfg, agent) if rep.records == 0 else None
    declared = cfg.policy_recipients.get(agent)
    window = {k: q[k].strip() for k in ("since", "until") if q.get(k, "").strip()}
    color = charts.agent_colors(await db(queries.agents, cfg.store)).get(agent, charts.PALETTE[0])
    return page(
        request,
        "agent.html",
        title=f"Agent {agent}",
        agent=agent,
        rep=rep,
        unknown=unknown,
        recipient=rep.recipient or (declared.model_dump() if declared else {}),
        window=window,
        doc=doc,
        months_chart=charts.responsive(
            charts.column_chart(rep.months, "month", color),
            charts.column_chart(rep.months, "month", color, narrow=True),
        )
        if rep.months
        else None,
        records_link=link("/records", {"agent": agent, **window}),
        download_links={f: link(f"/agents/{agent}", {**window, "format": f}) for f in DOWNLOADS},
    )


async def shine_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    fmt = params.choice(q, "format", ("page", *DOWNLOADS), "page")
    year = params.year(q, _now().year - 1)
    rep = await db(shine_the_light_report, cfg.store, year)
    doc = render.shine_the_light_document(rep)
    if fmt != "page":
        return download(doc, fmt, rep.to_dict(), f"shine-the-light-{year}")
    years = await db(queries.years, cfg.store)
    return page(
        request,
        "shine.html",
        title=f"Shine the Light {year}",
        year=year,
        years=sorted({*years, year}, reverse=True),
        rep=rep,
        download_links={
            f: link("/shine-the-light", {"year": year, "format": f}) for f in DOWNLOADS
        },
    )


async def verify_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    fmt = params.choice(request.query, "format", ("page", "json"), "page")
    verification = await cfg.verification()
    if fmt == "json":
        return json_response(_verification_json(verification))
    return page(
        request,
        "verify.html",
        title="Verification",
        verification=verification,
        every=cfg.verify_every,
        fresh=cfg.verify_fresh,
    )


async def verify_now(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    await request.app[CONFIG].verification(force=True)
    raise web.HTTPSeeOther("/verify")


async def no_icon(request: web.Request) -> web.StreamResponse:
    # Browsers ask for it on every page; an empty answer keeps 401s out of their consoles.
    return web.Response(status=204)
