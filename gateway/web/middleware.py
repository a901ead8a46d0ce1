"""What every request goes through: the view through a trusted proxy, authentication, the
same-origin rule for posts, errors turned into answers, and the security headers on every
response.

Only ``/login``, ``/favicon.ico`` and ``/static/`` are served without a session; a
browser without one is redirected to the login page (remembering where it was going), an
API client gets 401. A post from another site is refused (403) before any handler runs,
and forms carry a per-session token (``check_csrf``) as a second line of defence.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Final
from urllib.parse import urlencode

import sqlalchemy as sa
from aiohttp import web

from gateway.errors import LedgerError
from gateway.web import params
from gateway.web.auth import COOKIE_NAME
from gateway.web.config import CONFIG, ReviewConfig, Unavailable
from gateway.web.proxy import as_the_browser_sees_it
from gateway.web.responses import ACCOUNT, SESSION, error_response, json_response, wants_page

log = logging.getLogger("gateway.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
_PUBLIC_PREFIXES: Final = ("/static/",)
_PUBLIC_PATHS: Final = frozenset({"/login", "/favicon.ico"})


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Added to every response, errors and static files included (``on_response_prepare``);
    a download keeps the stricter Content-Security-Policy it set itself."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["Server"] = "gateway-review"


@web.middleware
async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """From a trusted proxy, the request as the browser made it: its scheme, host and
    the client's address (``gateway.web.proxy``); from anyone else, unchanged."""
    proxies = request.app[CONFIG].trusted_proxies
    if proxies:
        h = request.headers
        seen = as_the_browser_sees_it(
            request.remote,
            h.getall("X-Forwarded-For", []),
            h.getall("X-Forwarded-Proto", []),
            h.getall("X-Forwarded-Host", []),
            proxies,
        )
        changes = {k: v for k, v in vars(seen).items() if v is not None}
        if changes:
            request = request.clone(**changes)
    return await handler(request)


def _same_origin(request: web.Request, cfg: ReviewConfig) -> bool:
    # A cross-site form post (login CSRF, forced logout) carries the attacker's Origin.
    # Ours is the one the browser used: as it reached us, or the configured external one.
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() not in (
        f"{request.scheme}://{request.host}".lower(),
        cfg.external_origin,
    ):
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    found = cfg.sessions.check_for(request.cookies.get(COOKIE_NAME), cfg.accounts)
    session, account = found if found is not None else (None, None)
    request[SESSION] = session
    request[ACCOUNT] = account
    if request.method not in ("GET", "HEAD") and not _same_origin(request, cfg):
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
        return json_response(
            {"error": "authentication required: log in at /login", "status": 401}, 401
        )
    return await handler(request)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad parameters are 400, missing features 503; anything unexpected is logged here
    and answered without details."""
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


async def check_csrf(request: web.Request) -> None:
    """A form post must carry its session's token: proof that it came from our page."""
    session = request.get(SESSION)
    form = await request.post()
    token = form.get("csrf")
    if (
        session is None
        or not isinstance(token, str)
        or not hmac.compare_digest(token.encode(), session.csrf.encode())
    ):
        raise web.HTTPForbidden(reason="the form has expired; reload the page and try again")
