"""The reviewer web page: an aiohttp application over the disclosure log (read-only).

Routes (all but ``/login`` and ``/static/`` need a session)::

    GET  /                          dashboard: totals, charts, verification status
    GET  /records                   filtered, paginated list; ?format=json|csv|html downloads
    GET  /records/{record_id}       one record and where it sits in the log
    GET  /subject                   access-request report (?subject=CUSTOMER_ID or ?subject_ref=)
    GET  /agents                    agents in the log
    GET  /agents/{agent}            agent report (?since, ?until)
    GET  /shine-the-light           yearly Shine the Light report (?year)
    GET  /verify                    verification details;  POST /verify re-runs it
    GET  /login, POST /login, POST /logout

Every report page takes ``?format=json|csv|html`` for a download of what ``gateway log``
would write. Customer ids are turned into the log's pseudonymous subject reference and the
browser is redirected to a URL holding only that reference, so raw customer ids do not stay
in links, bookmarks or history; the access log records paths without query strings.

Database work is synchronous (SQLAlchemy) and runs on worker threads, keeping the event loop
free for other reviewers' requests.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
import sqlalchemy as sa
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway import keys as keystore
from gateway.crypto import VerifyKey, subject_ref
from gateway.errors import ConfigError, LedgerError
from gateway.ledger import render
from gateway.ledger.query import RecordFilter, count_records, iter_records, list_records
from gateway.ledger.reports import (
    agent_report,
    categories_by_agent,
    disclosures_over_time,
    shine_the_light_report,
    subject_report,
)
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import VerifyReport, verify_log
from gateway.records import DecisionRecord
from gateway.settings import Settings
from gateway.taxonomy import default_taxonomy
from gateway.web import charts, params, queries
from gateway.web.auth import COOKIE_NAME, Credentials, Session, Sessions

log = logging.getLogger("gateway.web")

HERE: Final = Path(__file__).resolve().parent
CSP: Final = (
    "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it, Chrome sends "Origin: null" on our own form posts, which
    # the cross-site check must refuse. same-origin still tells other sites nothing.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}
DOWNLOADS: Final = ("json", "csv", "html")
_PUBLIC_PREFIXES: Final = ("/static/",)
_PUBLIC_PATHS: Final = frozenset({"/login", "/favicon.ico"})
_MAX_FORM_FIELD: Final = 4096
_AUTO_DAILY_DAYS: Final = 92  # longer ranges chart per month


@dataclass
class Verification:
    report: VerifyReport | None
    problem: str | None
    checked_at: datetime
    took: float = 0.0


@dataclass
class ReviewConfig:
    """Everything the handlers need; built by ``config_from_settings`` or by tests."""

    store: LedgerStore
    credentials: Credentials
    sessions: Sessions = field(default_factory=Sessions)
    pseudonym_key: bytes | None = field(default=None, repr=False)
    pseudonym_problem: str | None = None
    verify_key: VerifyKey | None = None
    verify_problem: str | None = None
    failure_delay: float = 1.0  # seconds a wrong login waits (serialised: slows guessing)
    verify_ttl: float = 300.0  # seconds a verification result is shown before re-running
    max_export: int = 50_000  # records per download; more: narrow the filter or use the CLI
    _verified: Verification | None = field(default=None, init=False, repr=False)
    _verify_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)
    _fail_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def pause_after_failure(self) -> None:
        # Failed attempts wait in turn: guessing runs at most one try per delay, however
        # many connections it uses.
        async with self._fail_lock:
            await asyncio.sleep(self.failure_delay)

    def subject_ref(self, customer_id: str) -> str:
        if self.pseudonym_key is None:
            raise Unavailable(
                "customer ids cannot be looked up: "
                + (self.pseudonym_problem or "no pseudonym key")
                + "; use the subject reference (subj_...) instead"
            )
        return subject_ref(self.pseudonym_key, customer_id)

    async def verification(self, force: bool = False) -> Verification:
        # One verification at a time: it re-hashes the whole log.
        async with self._verify_lock:
            cached = self._verified
            if (
                cached is not None
                and not force
                and (datetime.now(UTC) - cached.checked_at).total_seconds() < self.verify_ttl
            ):
                return cached
            started = time.monotonic()
            if self.verify_key is None:
                result = Verification(None, self.verify_problem or "no public key", _now())
            else:
                try:
                    report = await asyncio.to_thread(verify_log, self.store, self.verify_key)
                    result = Verification(report, None, _now())
                except LedgerError as exc:
                    result = Verification(None, str(exc), _now())
            result.took = time.monotonic() - started
            self._verified = result
            return result


CONFIG: Final = web.AppKey("config", ReviewConfig)
TEMPLATES: Final = web.AppKey("templates", jinja2.Environment)
SESSION: Final = web.RequestKey("session", Session | None)


class Unavailable(Exception):
    """A feature the server is not configured for (HTTP 503, the message says why)."""


def _now() -> datetime:
    return datetime.now(UTC)


# -- set-up -------------------------------------------------------------------------------


def load_verify_key(settings: Settings) -> tuple[VerifyKey | None, str | None]:
    """The gateway public key for verification, or why there is none. Only the public key
    is kept: the review server never needs to sign."""
    try:
        return keystore.load_verify_key(settings.signing_public_key_path), None
    except ConfigError as exc:
        if Path(settings.signing_key_path).exists():
            try:
                return keystore.load_signing_key(settings.signing_key_path).public_key(), None
            except ConfigError:
                pass
        return None, str(exc)


def config_from_settings(settings: Settings, credentials: Credentials) -> ReviewConfig:
    """Open the ledger (it must exist) and load the keys the review page can use."""
    store = open_store(settings.ledger_url, create=False)
    try:
        pseudonym: bytes | None = keystore.load_pseudonym_key(settings.pseudonym_key_path)
        pseudonym_problem = None
    except ConfigError as exc:
        pseudonym, pseudonym_problem = None, str(exc)
    verify_key, verify_problem = load_verify_key(settings)
    return ReviewConfig(
        store,
        credentials,
        pseudonym_key=pseudonym,
        pseudonym_problem=pseudonym_problem,
        verify_key=verify_key,
        verify_problem=verify_problem,
    )


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is data from the log or the request
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = render.text
    env.filters["short"] = render.short
    env.filters["text"] = render.text
    env.filters["thousands"] = lambda n: f"{n:,}"
    env.filters["day"] = lambda when: "—" if when is None else f"{when.astimezone(UTC):%Y-%m-%d}"
    env.globals["OUTCOME_LABELS"] = charts.OUTCOME_LABELS
    return env


def create_app(config: ReviewConfig) -> web.Application:
    app = web.Application(middlewares=[_errors, _authenticate], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[TEMPLATES] = templates()
    r = app.router
    r.add_get("/", dashboard, name="dashboard")
    r.add_get("/records", records_page, name="records")
    r.add_get("/records/{record_id}", record_page, name="record")
    r.add_get("/subject", subject_page, name="subject")
    r.add_get("/agents", agents_page, name="agents")
    r.add_get("/agents/{agent}", agent_page, name="agent")
    r.add_get("/shine-the-light", shine_page, name="shine")
    r.add_get("/verify", verify_page, name="verify")
    r.add_post("/verify", verify_now, name="verify_now")
    r.add_get("/favicon.ico", no_icon)
    r.add_get("/login", login_form, name="login")
    r.add_post("/login", login_submit)
    r.add_post("/logout", logout, name="logout")
    r.add_static("/static", HERE / "static", name="static")
    app.on_response_prepare.append(_security_headers)
    return app


class AccessLog(AbstractAccessLogger):
    """Method, path, status and time: no query string, which may carry a customer id."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %s %.1fms",
            request.remote,
            request.method,
            request.path,
            response.status,
            time * 1000,
        )


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on host:port (0: any free port); returns the runner and the base URL."""
    runner = web.AppRunner(app, access_log_class=AccessLog)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return runner, f"http://{shown}:{bound[1]}/"


# -- middleware and helpers ---------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["Server"] = "gateway-review"


def wants_page(request: web.Request) -> bool:
    """A browser navigation (gets pages and redirects) rather than an API or download
    client (gets status codes and JSON)."""
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("Accept", "")
        and request.query.get("format") not in ("json", "csv")
    )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=render.to_json(data), status=status, content_type="application/json")


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    if not wants_page(request):
        return _json({"error": message, "status": status}, status)
    title = f"{status} {HTTPStatus(status).phrase}"
    return page(request, "error.html", status=status, title=title, message=message)


def _same_origin(request: web.Request) -> bool:
    # A cross-site form post (login CSRF, forced logout) carries the attacker's Origin.
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    session = cfg.sessions.check(request.cookies.get(COOKIE_NAME), cfg.credentials.user)
    request[SESSION] = session
    if request.method not in ("GET", "HEAD") and not _same_origin(request):
        return error_response(request, 403, "cross-site request refused")
    if request.path in _PUBLIC_PATHS or request.path.startswith(_PUBLIC_PREFIXES):
        return await handler(request)
    if session is None:
        if wants_page(request):
            target = (
                "/login"
                if request.path == "/"
                else "/login?" + urlencode({"next": request.path_qs})
            )
            raise web.HTTPSeeOther(target)
        return _json({"error": "authentication required: log in at /login", "status": 401}, 401)
    return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except params.BadParam as exc:
        return error_response(request, 400, str(exc))
    except Unavailable as exc:
        return error_response(request, 503, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(request, exc.status, exc.reason)
    except (LedgerError, sa.exc.SQLAlchemyError):
        log.exception("ledger query failed for %s %s", request.method, request.path)
        return error_response(
            request, 503, "the disclosure log cannot be read right now; see the server log"
        )
    except Exception:
        log.exception("error serving %s %s", request.method, request.path)
        return error_response(request, 500, "internal error; see the server log")


def page(request: web.Request, template: str, *, status: int = 200, **ctx: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session else "",
            path=request.path,
            **ctx,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


_STYLE_RE = re.compile(r"<style>(.*?)</style>", re.S)


def _html_download(doc: render.Document) -> tuple[str, str]:
    """The standalone HTML of ``doc`` and a CSP that lets only its own stylesheet run."""
    html = render.to_html(doc)
    hashes = [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
        for m in _STYLE_RE.findall(html)
    ]
    styles = " ".join(hashes) or "'none'"
    csp = (
        f"default-src 'none'; style-src {styles}; base-uri 'none'; form-action 'none';"
        " frame-ancestors 'none'"
    )
    return html, csp


def download(doc: render.Document, fmt: str, data: Any, filename: str) -> web.Response:
    """``doc`` as a file: the same bytes ``gateway log ... --format`` writes."""
    disposition = f'attachment; filename="{filename}.{fmt}"'
    if fmt == "json":
        resp = web.Response(text=render.to_json(data), content_type="application/json")
    elif fmt == "csv":
        resp = web.Response(text=render.to_csv(doc), content_type="text/csv", charset="utf-8")
    else:
        html, csp = _html_download(doc)
        resp = web.Response(text=html, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = csp
    resp.headers["Content-Disposition"] = disposition
    return resp


def link(path: str, query: Mapping[str, str | int]) -> str:
    q = {k: str(v) for k, v in query.items() if v not in (None, "")}
    return path + ("?" + urlencode(q) if q else "")


def _swap_customer_id(request: web.Request) -> None:
    """Redirect ?subject=CUSTOMER_ID to the same URL with ?subject_ref= instead."""
    customer = params.customer_id(request.query)
    if customer is None:
        return
    ref = request.app[CONFIG].subject_ref(customer)
    query = [(k, v) for k, v in request.query.items() if k not in ("subject", "subject_ref")]
    query.append(("subject_ref", ref))
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


# -- pages --------------------------------------------------------------------------------


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
    verification = await cfg.verification()
    totals: queries.Totals = data["totals"]
    outcome_totals: dict[str, int] = {o: 0 for o in params.OUTCOMES}
    for per in data["outcomes"].values():
        for o, n in per.items():
            outcome_totals[o] = outcome_totals.get(o, 0) + n
    if fmt == "json":
        return _json(
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
        line_chart=charts.line_chart(data["over_time"], data["period"], colors),
        bar_chart=charts.stacked_bars(data["outcomes"]),
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

    def gather() -> tuple[int, list[DecisionRecord], list[str]]:
        total = count_records(cfg.store, flt)
        recs = list_records(cfg.store, flt, limit=per_page, offset=(page_no - 1) * per_page)
        return total, recs, queries.agents(cfg.store)

    total, recs, agents = await db(gather)
    pages = max(1, math.ceil(total / per_page))
    base = filters.query(per_page=per_page) if per_page != 50 else filters.query()
    tax = default_taxonomy()
    return page(
        request,
        "records.html",
        title="Records",
        filters=filters,
        records=recs,
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

    def gather() -> tuple[Any, Any]:
        stored = cfg.store.get(rid)
        if stored is None:
            return None, None
        return stored, cfg.store.covering_checkpoint(stored.shard, stored.seq)

    stored, cp = await db(gather)
    if stored is None:
        raise web.HTTPNotFound(reason=f"no record {rid} in the log")
    location: dict[str, Any] = {
        "shard": stored.shard,
        "index": stored.seq,
        "leaf_hash": stored.leaf_hash.hex(),
        "checkpoint": f"size {cp.tree_size} at {cp.timestamp}" if cp else None,
    }
    rec = stored.record
    if rec is None:
        location["pruned"] = f"body removed by retention (prune #{stored.pruned_by})"
    if fmt == "json":
        body = (
            {"record_id": rid, **location}
            if rec is None
            else {
                "record": rec.model_dump(mode="json"),
                **location,
            }
        )
        return _json(body)
    return page(
        request,
        "record.html",
        title=f"Record {rid}",
        record_id=rid,
        rec=rec,
        location=location,
        subject_link=link("/subject", {"subject_ref": rec.subject_ref}) if rec else "",
    )


async def subject_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    q = request.query
    fmt = params.choice(q, "format", ("page", *DOWNLOADS), "page")
    _swap_customer_id(request)
    ref = params.subject_ref(q)
    if ref is None:
        if fmt != "page":
            raise params.BadParam("subject", "give a customer id (subject) or subject_ref")
        return page(request, "subject.html", title="Access request", ref=None, rep=None)
    rep = await db(subject_report, cfg.store, ref)
    doc = render.subject_document(rep)
    if fmt != "page":
        return download(doc, fmt, rep.to_dict(), f"subject-{ref}")
    return page(
        request,
        "subject.html",
        title="Access request",
        ref=ref,
        rep=rep,
        records_link=link("/records", {"subject_ref": ref}),
        download_links={f: link("/subject", {"subject_ref": ref, "format": f}) for f in DOWNLOADS},
    )


async def agents_page(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    fmt = params.choice(request.query, "format", ("page", "json"), "page")
    outcomes = await db(queries.outcomes_by_agent, cfg.store, RecordFilter())
    if fmt == "json":
        return _json(outcomes)
    return page(request, "agents.html", title="Agents", outcomes=outcomes)


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
    window = {k: q[k].strip() for k in ("since", "until") if q.get(k, "").strip()}
    color = charts.agent_colors(await db(queries.agents, cfg.store)).get(agent, charts.PALETTE[0])
    return page(
        request,
        "agent.html",
        title=f"Agent {agent}",
        agent=agent,
        rep=rep,
        window=window,
        doc=doc,
        months_chart=charts.column_chart(rep.months, "month", color) if rep.months else None,
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
        return _json(_verification_json(verification))
    return page(request, "verify.html", title="Verification", verification=verification)


async def _check_csrf(request: web.Request) -> None:
    session: Session | None = request.get(SESSION)
    form = await request.post()
    token = form.get("csrf")
    if (
        session is None
        or not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), session.csrf.encode())
    ):
        raise web.HTTPForbidden(reason="the form has expired; reload the page and try again")


async def verify_now(request: web.Request) -> web.StreamResponse:
    await _check_csrf(request)
    await request.app[CONFIG].verification(force=True)
    raise web.HTTPSeeOther("/verify")


async def no_icon(request: web.Request) -> web.StreamResponse:
    # Browsers ask for it on every page; an empty answer keeps 401s out of their consoles.
    return web.Response(status=204)


# -- login --------------------------------------------------------------------------------


def safe_next(value: object) -> str:
    """A local path to return to after login; anything else (another site, a scheme-relative
    ``//host``, control characters) becomes ``/``: no open redirect."""
    if (
        not isinstance(value, str)
        or len(value) > 2048
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or not value.isprintable()
        or value.startswith("/login")
    ):
        return "/"
    return value


async def login_form(request: web.Request) -> web.StreamResponse:
    nxt = safe_next(request.query.get("next"))
    if request.get(SESSION) is not None:
        raise web.HTTPSeeOther(nxt)
    return page(request, "login.html", title="Log in", next=nxt, failed=False, user="")


async def login_submit(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    form = await request.post()
    user, password, nxt = form.get("username"), form.get("password"), safe_next(form.get("next"))
    ok = False
    if (
        isinstance(user, str)
        and isinstance(password, str)
        and len(user) <= _MAX_FORM_FIELD
        and len(password) <= _MAX_FORM_FIELD
    ):
        # scrypt takes tens of milliseconds of CPU: keep it off the event loop.
        ok = await asyncio.to_thread(cfg.credentials.check, user, password)
    if not ok:
        log.warning("failed reviewer login from %s", request.remote)
        await cfg.pause_after_failure()
        return page(
            request,
            "login.html",
            status=401,
            title="Log in",
            next=nxt,
            failed=True,
            user=user if isinstance(user, str) and user.isprintable() else "",
        )
    token, _session = cfg.sessions.issue(cfg.credentials.user)
    log.info("reviewer logged in from %s", request.remote)
    resp = web.Response(status=303, headers={"Location": nxt})
    resp.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(cfg.sessions.ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        # Plain HTTP on loopback by default; behind TLS the cookie must not leak to http.
        secure=request.secure,
    )
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    await _check_csrf(request)
    session: Session | None = request.get(SESSION)
    if session is not None:
        request.app[CONFIG].sessions.revoke(session)
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp
