"""The review page's form for recording a disclosure made outside the stream (an answer
to a court order, a debt collector, a merger: ``gateway.manual.KINDS``), for recorder
accounts only.

``GET /disclosures/new`` shows the form; ``POST /disclosures/new`` checks the session's
form token like every post, checks and records the disclosure exactly as ``gateway log
record-disclosure`` does (``gateway.ledger.manual``), with the reviewer as who recorded
it, and redirects to what was recorded. A disclosure that cannot be recorded as given
comes back as the form, filled in as sent, with what to fix (HTTP 400). A viewer gets 403
for both; a server without what recording takes (the signing key, the workers' key, the
policy) answers 503 saying which.

Customer ids travel only in the form's body, never in a URL, and the page they come back
on is not cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from gateway.errors import DisclosureRejected
from gateway.ledger.manual import DisclosureRecorder, DisclosureRequest
from gateway.ledger.reports import latest_recipients
from gateway.manual import KINDS, LEGAL_BASES, ROLES, SUBJECT_TYPES
from gateway.records import DecisionRecord
from gateway.taxonomy import default_taxonomy
from gateway.web.auth import Account
from gateway.web.config import CONFIG
from gateway.web.middleware import check_csrf
from gateway.web.responses import ACCOUNT, link, page

_MAX_FIELD: Final = 16 * 1024  # characters in one field (the customers' list is longest)
FIELDS: Final = (
    "kind",
    "recipient",
    "legal_name",
    "address",
    "role",
    "contract",
    "customers",
    "subject_type",
    "categories",
    "paths",
    "purposes",
    "legal_basis",
    "request_ref",
    "approved_by",
    "disclosed_at",
)


def _recorder_account(request: web.Request) -> Account:
    """The logged-in account if it may record disclosures; 403 otherwise."""
    account = request.get(ACCOUNT)
    if account is None or not account.can_record:
        role = account.role if account is not None else "none"
        raise web.HTTPForbidden(
            reason=f"this account ({role}) may read the log but not record disclosures:"
            " that takes a recorder account (GATEWAY_REVIEWERS_FILE)"
        )
    return account


def _lines(value: str) -> tuple[str, ...]:
    """One item per line (or comma): what the form's lists hold."""
    return tuple(x.strip() for line in value.splitlines() for x in line.split(",") if x.strip())


def _when(value: str) -> datetime | None:
    """A date-time as the browser's date-time field sends it (no zone: UTC)."""
    value = value.strip()
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise DisclosureRejected(
            "the disclosure time is not a date and time (YYYY-MM-DDTHH:MM)",
            field="disclosed_at",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def request_from_form(form: Mapping[str, str]) -> DisclosureRequest:
    """The form's fields as a ``DisclosureRequest`` (checked when recorded)."""

    def get(name: str) -> str:
        return form.get(name, "")

    return DisclosureRequest(
        kind=get("kind"),
        recipient=get("recipient"),
        customers=_lines(get("customers")),
        categories=_lines(get("categories")),
        request_ref=get("request_ref"),
        approved_by=get("approved_by"),
        legal_name=get("legal_name"),
        address=get("address"),
        role=get("role"),
        contract=get("contract"),
        subject_type=get("subject_type"),
        paths=_lines(get("paths")),
        purposes=_lines(get("purposes")),
        legal_basis=get("legal_basis"),
        disclosed_at=_when(get("disclosed_at")),
    )


def _form(
    request: web.Request,
    values: Mapping[str, str],
    *,
    problem: DisclosureRejected | None = None,
    recipients: Mapping[str, Any],
) -> web.Response:
    tax = default_taxonomy()
    return page(
        request,
        "disclosure_new.html",
        status=200 if problem is None else 400,
        title="Record a disclosure",
        kinds=list(KINDS.values()),
        roles=ROLES,
        bases=LEGAL_BASES,
        subject_types=SUBJECT_TYPES,
        recipients=sorted(recipients.items()),
        categories=sorted(tax.categories),
        uses=sorted(tax.uses),
        values=values,
        problem=None if problem is None else str(problem),
        problem_field=None if problem is None else problem.field,
    )


def _known_recipients(recorder: DisclosureRecorder) -> dict[str, Any]:
    return {**recorder.known, **latest_recipients(recorder.store)}


async def disclosure_form(request: web.Request) -> web.StreamResponse:
    _recorder_account(request)
    recorder = request.app[CONFIG].disclosure_recorder()
    known = await asyncio.to_thread(_known_recipients, recorder)
    return _form(request, {}, recipients=known)


def _done(records: list[DecisionRecord]) -> str:
    if len(records) == 1:
        return f"/records/{records[0].record_id}"
    first = records[0]
    return link("/records", {"agent": first.agent, "event_type": first.event_type})


async def disclosure_submit(request: web.Request) -> web.StreamResponse:
    await check_csrf(request)
    account = _recorder_account(request)
    recorder = request.app[CONFIG].disclosure_recorder()
    posted = await request.post()
    values = {
        name: value
        for name in FIELDS
        if isinstance(value := posted.get(name, ""), str) and len(value) <= _MAX_FIELD
    }
    too_long = [name for name in FIELDS if name in posted and name not in values]
    try:
        if too_long:
            raise DisclosureRejected(
                f"{too_long[0].replace('_', ' ')}: at most {_MAX_FIELD} characters",
                field=too_long[0],
            )
        req = request_from_form(values)
        records = await asyncio.to_thread(recorder.record, req, account.user)
    except DisclosureRejected as exc:
        known = await asyncio.to_thread(_known_recipients, recorder)
        return _form(request, values, problem=exc, recipients=known)
    raise web.HTTPSeeOther(_done(records))
