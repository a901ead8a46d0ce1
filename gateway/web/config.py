"""What the review page serves from: the open ledger, the reviewer accounts and sessions,
the keys it can use, the login limits, how it is reached (directly or behind a proxy), the
verification result with how fresh it is kept, and, when a recorder account exists, what
records disclosures made outside the stream."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from gateway.crypto import VerifyKey
from gateway.errors import ConfigError, LedgerError
from gateway.ledger import access
from gateway.ledger.manual import DisclosureRecorder, recorder_from_settings
from gateway.ledger.reports import policy_recipients
from gateway.ledger.store import LedgerStore
from gateway.ledger.verify import VerifyReport, verify_log
from gateway.policy import load_policy
from gateway.pseudonyms import PseudonymKeyring
from gateway.records import Recipient
from gateway.settings import Settings
from gateway.web.auth import Accounts, Credentials, Sessions
from gateway.web.proxy import Network, parse_origin, parse_proxies
from gateway.web.throttle import LoginLimits


class Unavailable(Exception):
    """A feature the server is not configured for (HTTP 503, the message says why)."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Verification:
    report: VerifyReport | None
    problem: str | None
    checked_at: datetime
    took: float = 0.0  # seconds, shown on the verification page
    started_at: datetime | None = None  # what it saw is the log as of this moment or later


@dataclass
class ReviewConfig:
    """Everything the handlers need; built by ``config_from_settings`` or by tests."""

    store: LedgerStore
    # One reviewer's credentials (a viewer), or every account with its role.
    credentials: Credentials | Accounts
    sessions: Sessions = field(default_factory=Sessions)
    # The current pseudonym key; ``pseudonyms``: every period's (current first), which
    # ``config_from_settings`` loads. Given only the key, it is the one period there is.
    pseudonym_key: bytes | None = field(default=None, repr=False)
    pseudonym_problem: str | None = None
    pseudonyms: PseudonymKeyring | None = field(default=None, repr=False)
    verify_key: VerifyKey | None = None
    verify_problem: str | None = None
    # Agents the policy declares, with their recipients: known even before any record.
    policy_recipients: dict[str, Recipient] = field(default_factory=dict)
    policy_problem: str | None = None
    failure_delay: float = 1.0  # seconds before a wrong login is answered
    limits: LoginLimits = field(default_factory=LoginLimits)
    # The origin reviewers type (https://review.example.com) when a proxy is in front.
    external_origin: str | None = None
    # Peers whose X-Forwarded-For/-Proto/-Host headers are believed.
    trusted_proxies: tuple[Network, ...] = ()
    verify_ttl: float = 300.0  # seconds a verification result is shown before re-running
    verify_every: float = 300.0  # seconds between verifications in the background; 0: never
    verify_fresh: float = 60.0  # the dashboard re-runs a verification older than this
    max_export: int = 50_000  # records per download; more: narrow the filter or use the CLI
    # Records disclosures made outside the stream (recorder accounts only); None: why not
    # in ``recorder_problem``.
    recorder: DisclosureRecorder | None = field(default=None, repr=False)
    recorder_problem: str | None = None
    accounts: Accounts = field(init=False, repr=False)
    _verified: Verification | None = field(default=None, init=False, repr=False)
    _verify_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.accounts = Accounts.of(self.credentials)

    def disclosure_recorder(self) -> DisclosureRecorder:
        """What records disclosures, or ``Unavailable`` saying why this server cannot."""
        if self.recorder is None:
            raise Unavailable(
                "disclosures cannot be recorded here: "
                + (self.recorder_problem or "no recorder account is configured")
            )
        return self.recorder

    def close(self) -> None:
        """Close the ledger connections (the reading store, and the recorder's)."""
        if self.recorder is not None:
            self.recorder.close()
        self.store.close()

    def _keyring(self) -> PseudonymKeyring:
        if self.pseudonyms is not None:
            return self.pseudonyms
        if self.pseudonym_key is None:
            raise Unavailable(
                "customer ids cannot be looked up: "
                + (self.pseudonym_problem or "no pseudonym key")
                + "; use the subject reference (subj_...) instead"
            )
        return PseudonymKeyring.single(self.pseudonym_key)

    def subject_refs(self, customer_id: str) -> list[str]:
        """Every reference ``customer_id`` has had in the log, one per pseudonym period,
        current first: what finds the subject's whole history."""
        return self._keyring().subject_refs(customer_id)

    def subject_ref(self, customer_id: str) -> str:
        """The current pseudonym period's reference of ``customer_id`` (records made before
        a pseudonym rotation have others: ``subject_refs``)."""
        return self._keyring().subject_ref(customer_id)

    async def verification(self, force: bool = False, max_age: float | None = None) -> Verification:
        """The last verification if it is younger than ``max_age`` seconds (default
        ``verify_ttl``) and not ``force``d, else a new one. It runs on a worker thread;
        one at a time, since it re-hashes the whole log, and a caller that waited for
        another's run takes that fresh result."""
        limit = self.verify_ttl if max_age is None else max_age
        asked = _now()
        async with self._verify_lock:
            cached = self._verified
            if cached is not None and (
                (cached.started_at is not None and cached.started_at >= asked)
                or (not force and (_now() - cached.checked_at).total_seconds() < limit)
            ):
                return cached
            started_at = _now()
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
            result.started_at = started_at
            self._verified = result
            return result


CONFIG: Final = web.AppKey("config", ReviewConfig)


def limits_from_settings(settings: Settings) -> LoginLimits:
    """The login limits in ``settings`` (the GATEWAY_REVIEW_LOGIN_* variables)."""
    return LoginLimits(
        per_account=settings.review_login_account_failures,
        per_client=settings.review_login_client_failures,
        window=settings.review_login_window_seconds,
        max_pending=settings.review_login_max_pending,
    )


def config_from_settings(settings: Settings, credentials: Credentials | Accounts) -> ReviewConfig:
    """Open the ledger (it must exist) read-only, and load the keys the review page can
    use: the pseudonym key and the verify key. A missing key disables its feature, with
    the reason kept to show. The policy, if its file is there, names the agents that have
    no record yet. Proxy settings that do not parse are a ConfigError before the ledger
    is opened.

    Only when an account may record disclosures does the server load what recording
    takes (the signing key, the workers' key, the policy file: ``recorder_from_settings``)
    on a connection of its own; without any of them recording is unavailable, with the
    reason kept to show, and reading works as before. Otherwise the server never signs
    and reads the signing key only as the verify key's stand-in."""
    external_origin = parse_origin(settings.review_external_origin)
    trusted_proxies = parse_proxies(settings.review_trust_proxy)
    limits = limits_from_settings(settings)
    store = access.open_ledger(settings)
    try:
        pseudonyms: PseudonymKeyring | None = access.pseudonyms(settings)
        pseudonym_problem = None
    except ConfigError as exc:
        pseudonyms, pseudonym_problem = None, str(exc)
    try:
        verify_key: VerifyKey | None = access.verify_key(settings)
        verify_problem = None
    except ConfigError as exc:
        verify_key, verify_problem = None, str(exc)
    recipients: dict[str, Recipient] = {}
    policy_problem = None
    if settings.policy_path.exists():
        try:
            recipients = policy_recipients(load_policy(settings.policy_path))
        except ConfigError as exc:
            policy_problem = f"agents without records are not listed: {exc}"
    recorder: DisclosureRecorder | None = None
    recorder_problem = None
    recorders = Accounts.of(credentials).recorders
    if recorders:
        try:
            recorder = recorder_from_settings(settings)
        except (ConfigError, LedgerError) as exc:
            recorder_problem = f"{exc} (needed by recorder {recorders[0].user})"
    return ReviewConfig(
        store,
        credentials,
        recorder=recorder,
        recorder_problem=recorder_problem,
        pseudonym_key=None if pseudonyms is None else pseudonyms.master,
        pseudonym_problem=pseudonym_problem,
        pseudonyms=pseudonyms,
        verify_key=verify_key,
        verify_problem=verify_problem,
        policy_recipients=recipients,
        policy_problem=policy_problem,
        limits=limits,
        external_origin=external_origin,
        trusted_proxies=trusted_proxies,
        verify_every=settings.review_verify_every_seconds,
    )
