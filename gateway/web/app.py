"""The reviewer web page: an aiohttp application over the disclosure log (read-only, but
for recorder accounts recording disclosures made outside the stream).

Routes (all but ``/login`` and ``/static/`` need a session)::

    GET  /                          dashboard: totals, charts, verification status
    GET  /records                   filtered, paginated list; ?format=json|csv|html downloads
    GET  /records/{record_id}       one record and where it sits in the log
    GET  /subject                   access-request report (?subject=CUSTOMER_ID or ?subject_ref=)
    GET  /agents                    agents in the log
    GET  /agents/{agent}            agent report (?since, ?until)
    GET  /shine-the-light           yearly Shine the Light report (?year)
    GET  /verify                    verification details;  POST /verify re-runs it
    GET  /disclosures/new           record a disclosure made outside the stream (recorders);
    POST /disclosures/new           records it (viewers: 403)
    GET  /login, POST /login, POST /logout

Every report page takes ``?format=json|csv|html`` for a download of what ``gateway log``
would write. Customer ids are turned into the log's pseudonymous subject reference and the
browser is redirected to a URL holding only that reference, so raw customer ids do not stay
in links, bookmarks or history; the access log records paths without query strings.

Database work is synchronous (SQLAlchemy) and runs on worker threads, keeping the event loop
free for other reviewers' requests; password checks have threads of their own. While the
application runs, the log is verified again every ``ReviewConfig.verify_every`` seconds in
the background, so the integrity shown is never older than that.

The application is assembled here from its parts: ``config`` (what it serves from),
``middleware`` (authentication, errors, headers), ``pages``, ``disclosures`` (the
recorders' form), ``login`` and ``responses``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.web import disclosures, login, pages
from gateway.web.config import CONFIG, ReviewConfig
from gateway.web.middleware import authenticate, errors, forwarded, security_headers
from gateway.web.responses import TEMPLATES, templates

_STATIC_DIR: Final = Path(__file__).resolve().parent / "static"

log = logging.getLogger("gateway.web")


async def _reverify(config: ReviewConfig) -> None:
    while True:
        await asyncio.sleep(config.verify_every)
        try:
            await config.verification(force=True)
        except Exception:  # the next round may succeed; the pages show the last result
            log.exception("scheduled verification of the disclosure log failed")


async def verify_on_schedule(app: web.Application) -> AsyncIterator[None]:
    """Application context: re-verify the log every ``verify_every`` seconds (0: never)."""
    config = app[CONFIG]
    task = asyncio.create_task(_reverify(config)) if config.verify_every > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


def create_app(config: ReviewConfig) -> web.Application:
    app = web.Application(middlewares=[forwarded, errors, authenticate], client_max_size=64 * 1024)
    app[CONFIG] = config
    app[TEMPLATES] = templates()
    app.cleanup_ctx.append(login.login_gate)
    app.cleanup_ctx.append(verify_on_schedule)
    r = app.router
    r.add_get("/", pages.dashboard, name="dashboard")
    r.add_get("/records", pages.records_page, name="records")
    r.add_get("/records/{record_id}", pages.record_page, name="record")
    r.add_get("/subject", pages.subject_page, name="subject")
    r.add_get("/agents", pages.agents_page, name="agents")
    r.add_get("/agents/{agent}", pages.agent_page, name="agent")
    r.add_get("/shine-the-light", pages.shine_page, name="shine")
    r.add_get("/verify", pages.verify_page, name="verify")
    r.add_post("/verify", pages.verify_now, name="verify_now")
    r.add_get("/disclosures/new", disclosures.disclosure_form, name="disclosure_form")
    r.add_post("/disclosures/new", disclosures.disclosure_submit)
    r.add_get("/favicon.ico", pages.no_icon)
    r.add_get("/login", login.login_form, name="login")
    r.add_post("/login", login.login_submit)
    r.add_post("/logout", login.logout, name="logout")
    r.add_static("/static", _STATIC_DIR, name="static")
    app.on_response_prepare.append(security_headers)
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
