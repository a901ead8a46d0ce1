"""How the review page answers: an HTML page from a template, JSON, a download in one of
the ``gateway log`` formats, or an error in whichever of those the client asked for."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from datetime import UTC
from http import HTTPStatus
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from gateway.ledger import render
from gateway.web import charts
from gateway.web.auth import Account, Session

TEMPLATES: Final = web.AppKey("templates", jinja2.Environment)
# The request's valid session, or None; set by the authentication middleware.
SESSION: Final = web.RequestKey[Session | None]("session")
# The account that session is for (its role says what it may do), or None.
ACCOUNT: Final = web.RequestKey[Account | None]("account")

_TEMPLATE_DIR: Final = Path(__file__).resolve().parent / "templates"
_STYLE_RE = re.compile(r"<style>(.*?)</style>", re.S)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATE_DIR),
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
    env.filters["duration"] = duration
    env.filters["breakable"] = breakable
    env.filters["sentence"] = sentence
    env.globals["OUTCOME_LABELS"] = charts.OUTCOME_LABELS
    return env


def breakable(value: object) -> Markup:
    """``value`` escaped, with a line-break opportunity after each dot and underscore: a
    long dotted name (user.contact.address.postal_code) wraps there instead of widening
    its column or breaking mid-word."""
    return Markup(re.sub(r"([._])", r"\1<wbr>", str(escape(value))))


def sentence(message: str) -> str:
    """A message as the CLI words it ("no records for ...: check ...") as a sentence."""
    message = message.strip()
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


def duration(seconds: float) -> str:
    """``seconds`` in words: "5 minutes", "1 minute", "90 seconds", "0.3 seconds"."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'' if minutes == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def wants_page(request: web.Request) -> bool:
    """A browser navigation (gets pages and redirects) rather than an API or download
    client (gets status codes and JSON)."""
    return (
        request.method in ("GET", "HEAD")
        and "text/html" in request.headers.get("Accept", "")
        and request.query.get("format") not in ("json", "csv")
    )


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=render.to_json(data), status=status, content_type="application/json")


def page(request: web.Request, template: str, *, status: int = 200, **ctx: Any) -> web.Response:
    session = request.get(SESSION)
    account = request.get(ACCOUNT)
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            account=account,
            csrf=session.csrf if session else "",
            path=request.path,
            **ctx,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def error_response(request: web.Request, status: int, message: str) -> web.Response:
    if not wants_page(request):
        return json_response({"error": message, "status": status}, status)
    title = f"{status} {HTTPStatus(status).phrase}"
    return page(request, "error.html", status=status, title=title, message=message)


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
