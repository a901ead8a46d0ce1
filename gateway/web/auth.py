"""Reviewer authentication: one set of credentials from the settings, signed session cookies.

The reviewer password comes from ``GATEWAY_REVIEWER_PASSWORD``, either plain or as
``scrypt$<salt hex>$<hash hex>`` (N=2**14, r=8, p=1, 32 bytes), so that the environment or
``.env`` need not hold the password itself. Make one with ``gateway review --hash-password``
or, without the gateway installed::

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
from dataclasses import dataclass, field
from typing import Final

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
    " a hash made with `gateway review --hash-password`"
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
        if session.expires <= time.time() or session.user != user:
            return None
        with self._lock:
            if session.sid not in self._live:
                return None
        return session

    def revoke(self, session: Session) -> None:
        with self._lock:
            self._live.pop(session.sid, None)
