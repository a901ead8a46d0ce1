"""Reviewer authentication: accounts with roles from the settings, signed session cookies.

Each account has a role: a ``viewer`` reads the log; a ``recorder`` may also record
disclosures made outside the stream. Accounts come from

* ``GATEWAY_REVIEWERS_FILE``: one ``user:role:scrypt$...`` line per account (``#`` starts a
  comment; hashes only, never a password), and
* ``GATEWAY_REVIEWER_USER`` / ``GATEWAY_REVIEWER_PASSWORD``: one account, a ``viewer``. The
  page was read-only before roles existed, so this account keeps exactly what it had: no
  deployment gains a writer without saying so in the file.

A password is plain (only in ``GATEWAY_REVIEWER_PASSWORD``) or
``scrypt$<salt hex>$<hash hex>`` (N=2**14, r=8, p=1, 32 bytes), so that the environment,
``.env`` or the file need not hold the password itself. Make one with ``gateway review
--hash-password`` or, without the gateway installed::

    python -c 'import getpass as g,hashlib as h,os;s=os.urandom(16);print(f"scrypt${s.hex()}${h.scrypt(g.getpass().encode(),salt=s,n=2**14,r=8,p=1,dklen=32).hex()}")'

A session is a cookie ``payload.mac``: the payload names the user, a random session id and
the expiry; the MAC is HMAC-SHA256 under a secret drawn at process start, so restarting the
server logs everyone out and no secret has to be configured or stored. Session ids are
also kept in memory, so that logging out revokes the cookie instead of merely deleting it
from one browser.
"""  # noqa: E501

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

import orjson

from gateway.errors import ConfigError
from gateway.settings import Settings

SCRYPT_N: Final = 2**14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
SCRYPT_LEN: Final = 32
_SCRYPT_RE = re.compile(r"scrypt\$([0-9a-fA-F]{16,128})\$([0-9a-fA-F]{64})")

SESSION_TTL: Final = 8 * 3600.0
COOKIE_NAME: Final = "gw_review"

MISSING_HINT: Final = (
    "the review page needs reviewer credentials: set GATEWAY_REVIEWER_USER and"
    " GATEWAY_REVIEWER_PASSWORD (in the environment or .env); the password may be plain or"
    " a hash made with `gateway review --hash-password`. Or list accounts with roles in"
    " GATEWAY_REVIEWERS_FILE"
)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=SCRYPT_LEN
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    """The ``scrypt$<salt hex>$<hash hex>`` form of ``password``."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = os.urandom(16) if salt is None else salt
    return f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}"


MIN_PASSWORD_LENGTH: Final = 10
# Passwords (and their words) that guessing lists try first, compared without case,
# spaces, digits or punctuation: "Password 2024!" is "password". Kept short on purpose:
# length does most of the work, the list catches the long-but-obvious.
COMMON_PASSWORDS: Final = frozenset(
    {
        "abcdefghij",
        "admin",
        "administrator",
        "changeme",
        "correcthorsebatterystaple",
        "disclosure",
        "disclosurereview",
        "dragon",
        "football",
        "gateway",
        "iloveyou",
        "letmein",
        "login",
        "master",
        "monkey",
        "passphrase",
        "passw",
        "password",
        "passwordpassword",
        "passwort",
        "princess",
        "qwerty",
        "qwertyuiop",
        "qwertz",
        "qwertzuiop",
        "review",
        "reviewer",
        "secret",
        "sunshine",
        "superman",
        "trustno",
        "welcome",
        "whatever",
        "",  # nothing but digits and punctuation: 1234567890, !!!!!!!!!!
    }
)


def password_problem(password: str) -> str | None:
    """Why ``password`` is too weak for the reviewer, or None: at least
    ``MIN_PASSWORD_LENGTH`` characters, at least five different ones, and not a common
    password with digits or punctuation around it."""
    advice = "; choose a passphrase of several unrelated words, or let a password manager make one"
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"the password is too short ({len(password)} characters): use at least"
            f" {MIN_PASSWORD_LENGTH}{advice}"
        )
    if len(set(password)) < 5:
        return f"the password has too few different characters (fewer than 5){advice}"
    letters = "".join(c for c in password.lower() if c.isalpha())
    if letters in COMMON_PASSWORDS or letters == letters[:1] * len(letters):
        return f"the password is a common one that guessing tries first{advice}"
    return None


def _digest(value: str) -> bytes:
    # Comparing fixed-size digests keeps the comparison time independent of the lengths.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Credentials:
    user: str
    # The configured password: plain, or the scrypt form (salt, hash).
    plain: str | None = field(default=None, repr=False)
    salt: bytes | None = field(default=None, repr=False)
    hashed: bytes | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, user: str, password: str) -> Credentials:
        """Credentials from the configured user and password (plain or scrypt form)."""
        if not user.strip():
            raise ConfigError("GATEWAY_REVIEWER_USER is empty; " + MISSING_HINT)
        if not password:
            raise ConfigError("GATEWAY_REVIEWER_PASSWORD is empty; " + MISSING_HINT)
        if password.startswith("scrypt$"):
            m = _SCRYPT_RE.fullmatch(password)
            if m is None:
                raise ConfigError(
                    "GATEWAY_REVIEWER_PASSWORD starts with 'scrypt$' but is not"
                    " scrypt$<salt hex>$<64 hex digits>; make one with"
                    " `gateway review --hash-password`"
                )
            return cls(user, salt=bytes.fromhex(m[1]), hashed=bytes.fromhex(m[2]))
        return cls(user, plain=password)

    def check(self, user: str, password: str) -> bool:
        """True if both match. Both are always compared, each in constant time."""
        user_ok = hmac.compare_digest(_digest(user), _digest(self.user))
        if self.hashed is not None and self.salt is not None:
            try:
                given = _scrypt(password, self.salt)
            except UnicodeEncodeError:  # lone surrogates from a hostile form post
                given = b""
            pass_ok = hmac.compare_digest(given, self.hashed)
        else:
            pass_ok = hmac.compare_digest(_digest(password), _digest(self.plain or ""))
        return user_ok & pass_ok


Role = Literal["viewer", "recorder"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
USER_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


@dataclass(frozen=True)
class Account:
    """A reviewer: the name, the role and what the password is checked against."""

    user: str
    role: Role
    credentials: Credentials = field(repr=False)

    @property
    def can_record(self) -> bool:
        """May record disclosures made outside the stream."""
        return self.role == "recorder"


class Accounts:
    """The reviewer accounts: user names are unique, there is at least one."""

    def __init__(self, accounts: Sequence[Account]) -> None:
        if not accounts:
            raise ConfigError("no reviewer accounts; " + MISSING_HINT)
        self._by_user: dict[str, Account] = {}
        for a in accounts:
            if a.user in self._by_user:
                raise ConfigError(
                    f"reviewer {a.user!r} is configured twice (GATEWAY_REVIEWER_USER and"
                    " GATEWAY_REVIEWERS_FILE, or two lines of the file): keep one"
                )
            self._by_user[a.user] = a
        self.accounts: tuple[Account, ...] = tuple(accounts)

    @classmethod
    def of(cls, given: Credentials | Accounts) -> Accounts:
        """``given`` as accounts: credentials alone are one viewer."""
        if isinstance(given, Accounts):
            return given
        return cls([Account(given.user, "viewer", given)])

    def get(self, user: str) -> Account | None:
        return self._by_user.get(user)

    def check(self, user: str, password: str) -> Account | None:
        """The account ``user`` logs in to with ``password``, or None. Exactly one password
        check either way (an unknown name is checked against another account, and fails
        on its name), so neither the time taken nor the work done tells names apart."""
        account = self._by_user.get(user)
        target = account if account is not None else self.accounts[0]
        return target if target.credentials.check(user, password) else None

    def describe(self) -> str:
        return ", ".join(f"{a.user} ({a.role})" for a in self.accounts)

    @property
    def recorders(self) -> tuple[Account, ...]:
        return tuple(a for a in self.accounts if a.can_record)


def parse_reviewers(text: str, source: str) -> list[Account]:
    """Accounts from ``user:role:scrypt$salt$hash`` lines (blank lines and ``#`` comments
    skipped); a ConfigError names the line and what is wrong with it (never a hash)."""
    out: list[Account] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{n}"
        parts = line.split(":")
        if len(parts) != 3:
            raise ConfigError(
                f"{where}: a reviewer line is user:role:hash (role {' or '.join(ROLES)},"
                " the hash from `gateway review --hash-password`)"
            )
        user, role, secret = (p.strip() for p in parts)
        if not USER_RE.fullmatch(user):
            raise ConfigError(
                f"{where}: the user name must be 1 to 64 letters, digits or . _ @ + -"
                " (starting with a letter or digit)"
            )
        if role not in ROLES:
            raise ConfigError(f"{where}: role {role!r} is not {' or '.join(ROLES)}")
        if not secret.startswith("scrypt$"):
            raise ConfigError(
                f"{where}: the file holds password hashes only, never a password: make the"
                " hash with `gateway review --hash-password`"
            )
        try:
            creds = Credentials.parse(user, secret)
        except ConfigError:
            raise ConfigError(
                f"{where}: the hash is not scrypt$<salt hex>$<64 hex digits>; make one with"
                " `gateway review --hash-password`"
            ) from None
        out.append(Account(user, role, creds))
    return out


def read_reviewers_file(path: Path) -> list[Account]:
    """The accounts in the reviewers file ``path`` (GATEWAY_REVIEWERS_FILE)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the reviewers file {path} (GATEWAY_REVIEWERS_FILE): {exc.strerror or exc}"
        ) from exc
    accounts = parse_reviewers(text, str(path))
    if not accounts:
        raise ConfigError(
            f"the reviewers file {path} (GATEWAY_REVIEWERS_FILE) lists no account: add"
            f" user:role:hash lines (role {' or '.join(ROLES)})"
        )
    return accounts


def accounts_from_settings(settings: Settings) -> Accounts:
    """Every reviewer account the settings configure: the reviewers file's, and the
    GATEWAY_REVIEWER_USER account (a viewer). Nothing configured, or the single account
    half configured, is a ConfigError naming the variables to set."""
    accounts: list[Account] = []
    if settings.reviewers_file is not None:
        accounts += read_reviewers_file(settings.reviewers_file)
    single = settings.reviewer_user or settings.reviewer_password is not None
    if single or not accounts:
        creds = credentials_from_settings(settings)
        accounts.insert(0, Account(creds.user, "viewer", creds))
    return Accounts(accounts)


def credentials_from_settings(settings: Settings) -> Credentials:
    """The reviewer credentials, or a ConfigError naming the variables to set."""
    user = settings.reviewer_user
    secret = settings.reviewer_password
    if not user or secret is None:
        missing = [
            name
            for name, value in (
                ("GATEWAY_REVIEWER_USER", user),
                ("GATEWAY_REVIEWER_PASSWORD", secret),
            )
            if not value
        ]
        raise ConfigError(f"{' and '.join(missing)} not set; {MISSING_HINT}")
    return Credentials.parse(user, secret.get_secret_value())


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    user: str
    sid: str
    expires: float

    @property
    def csrf(self) -> str:
        # Not secret from the reviewer; it only proves a form came from one of our pages.
        return hashlib.sha256(b"csrf\x1f" + self.sid.encode("ascii")).hexdigest()[:32]


class Sessions:
    """Issues and checks session cookies; thread-safe (the app may run on a thread)."""

    def __init__(self, ttl: float = SESSION_TTL, secret: bytes | None = None) -> None:
        self.ttl = ttl
        self._secret = secret or secrets.token_bytes(32)
        self._live: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"gw-review-session\x1f" + payload, hashlib.sha256).digest()

    def issue(self, user: str) -> tuple[str, Session]:
        now = time.time()
        session = Session(user, secrets.token_hex(16), now + self.ttl)
        with self._lock:
            # Forget expired sessions here: logins are rare, and need valid credentials.
            for sid in [s for s, exp in self._live.items() if exp <= now]:
                del self._live[sid]
            self._live[session.sid] = session.expires
        payload = orjson.dumps({"u": user, "sid": session.sid, "exp": session.expires})
        return f"{_b64e(payload)}.{_b64e(self._mac(payload))}", session

    def check(self, token: str | None, user: str) -> Session | None:
        """The session of a valid, unexpired, not revoked cookie for ``user``, else None."""
        session = self._valid(token)
        return session if session is not None and session.user == user else None

    def check_for(self, token: str | None, accounts: Accounts) -> tuple[Session, Account] | None:
        """The session of a valid, unexpired, not revoked cookie and the account it is
        for, if that account still exists (a removed or renamed reviewer's cookies die)."""
        session = self._valid(token)
        if session is None:
            return None
        account = accounts.get(session.user)
        return None if account is None else (session, account)

    def _valid(self, token: str | None) -> Session | None:
        if not token or len(token) > 1024 or token.count(".") != 1:
            return None
        body, mac = token.split(".")
        try:
            payload = _b64d(body)
            given = _b64d(mac)
        except ValueError:
            return None
        if not hmac.compare_digest(given, self._mac(payload)):
            return None
        try:
            data = orjson.loads(payload)
            session = Session(str(data["u"]), str(data["sid"]), float(data["exp"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        if session.expires <= time.time():
            return None
        with self._lock:
            if session.sid not in self._live:
                return None
        return session

    def revoke(self, session: Session) -> None:
        with self._lock:
            self._live.pop(session.sid, None)
