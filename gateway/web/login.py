"""The login form, the login post and logout.

A login post goes through the throttle (``gateway.web.throttle``) before its password is
looked at: a client or account over its failure limit, or a moment with too many checks in
flight, is answered 429 with ``Retry-After`` at once. An admitted password is hashed in
the login's own small thread pool, never in the threads the pages use, so a flood of
logins cannot slow the pages of a reviewer already logged in. A wrong password is answered
after ``ReviewConfig.failure_delay``, each on its own: failures do not queue behind each
other.

A successful login sets a session cookie (HttpOnly, SameSite=Strict, and Secure when the
browser reached the page over https: directly, through a trusted proxy, or at an https
external origin) and returns to the page the reviewer was going to, if that is a page of
this site. Logout revokes the session on the server, not only in this browser.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateway.web.auth import COOKIE_NAME, Account
from gateway.web.config import CONFIG
from gateway.web.middleware import check_csrf
from gateway.web.responses import SESSION, page
from gateway.web.throttle import LoginThrottle, Refused

log = logging.getLogger("gateway.web")

_MAX_FORM_FIELD: Final = 4096


@dataclass
class LoginGate:
    """The throttle and the password-hashing threads of one running application."""

    throttle: LoginThrottle
    pool: ThreadPoolExecutor


LOGIN: Final = web.AppKey("login", LoginGate)


async def login_gate(app: web.Application) -> AsyncIterator[None]:
    """Application context: the login gate exists while the application runs."""
    limits = app[CONFIG].limits
    pool = ThreadPoolExecutor(limits.hash_workers, thread_name_prefix="review-login")
    app[LOGIN] = LoginGate(LoginThrottle(limits), pool)
    try:
        yield
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


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


def _redisplayed(user: object) -> str:
    return user if isinstance(user, str) and len(user) <= 256 and user.isprintable() else ""


async def login_form(request: web.Request) -> web.StreamResponse:
    nxt = safe_next(request.query.get("next"))
    if request.get(SESSION) is not None:
        raise web.HTTPSeeOther(nxt)
    return page(
        request, "login.html", title="Log in", next=nxt, failed=False, refused=None, user=""
    )


def _succeeded(check: asyncio.Future[Account | None]) -> bool:
    return not check.cancelled() and check.exception() is None and check.result() is not None


def _refusal(request: web.Request, refused: Refused, nxt: str, user: object) -> web.Response:
    resp = page(
        request,
        "login.html",
        status=429,
        title="Log in",
        next=nxt,
        failed=False,
        refused=refused,
        user=_redisplayed(user),
    )
    resp.headers["Retry-After"] = str(refused.retry_after)
    return resp


async def login_submit(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    gate = request.app[LOGIN]
    form = await request.post()
    user, password, nxt = form.get("username"), form.get("password"), safe_next(form.get("next"))
    client = request.remote or "unknown"
    attempt = gate.throttle.admit(client, user if isinstance(user, str) else "")
    if isinstance(attempt, Refused):
        log.warning("reviewer login refused unchecked from %s: %s", client, attempt.reason)
        return _refusal(request, attempt, nxt, user)
    account: Account | None = None
    if (
        isinstance(user, str)
        and isinstance(password, str)
        and len(user) <= _MAX_FORM_FIELD
        and len(password) <= _MAX_FORM_FIELD
    ):
        # scrypt takes tens of milliseconds of CPU: off the event loop, and in the login's
        # own threads. The attempt keeps its place until the check has really finished,
        # even if the client hangs up first.
        check = asyncio.get_running_loop().run_in_executor(
            gate.pool, cfg.accounts.check, user, password
        )
        check.add_done_callback(lambda f: attempt.settle(_succeeded(f)))
        account = await asyncio.shield(check)
    else:
        attempt.settle(False)
    if account is None:
        log.warning("failed reviewer login from %s", client)
        await asyncio.sleep(cfg.failure_delay)
        return page(
            request,
            "login.html",
            status=401,
            title="Log in",
            next=nxt,
            failed=True,
            refused=None,
            user=_redisplayed(user),
        )
    token, _session = cfg.sessions.issue(account.user)
    log.info("reviewer logged in from %s (%s)", client, account.role)
    resp = web.Response(status=303, headers={"Location": nxt})
    resp.set_cookie(
        COOKIE_NAME,
        token,
        max_age=int(cfg.sessions.ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        # Plain HTTP on loopback by default; over https the cookie must not leak to http.
        secure=request.secure or (cfg.external_origin or "").startswith("https://"),
    )
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    session = request.get(SESSION)
    if session is not None:
        request.app[CONFIG].sessions.revoke(session)
    resp = web.Response(status=303, headers={"Location": "/login"})
    resp.del_cookie(COOKIE_NAME, path="/")
    return resp
