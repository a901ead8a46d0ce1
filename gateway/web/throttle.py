"""Limits on reviewer logins, applied before any password is checked.

Three limits, each answered with HTTP 429 and a ``Retry-After``:

* failed attempts **per client** (its address; behind a trusted proxy, the address the
  proxy saw) within a sliding window, so one machine cannot keep guessing;
* failed attempts **per account** (the user name given) within the same window, so many
  machines together cannot guess one account's password either;
* password checks **in flight** at once, so a flood is refused at the door instead of
  queueing: a legitimate login never waits behind thousands of failures.

An attempt is counted against its client and account from the moment it is admitted, not
only once it has failed: 300 guesses sent at the same moment meet the limits as if they
had been sent one after another, and no more of them are checked than the limits allow.
The throttle lives on the event loop and is used from it only, so it needs no lock.
"""

from __future__ import annotations

import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

MAX_KEYS: Final = 10_000  # clients and accounts remembered; more: the oldest are forgotten


@dataclass(frozen=True)
class LoginLimits:
    """How many failed logins are allowed, and how many checks may run at once."""

    per_account: int = 5  # failures per account within ``window``
    per_client: int = 20  # failures per client within ``window``
    window: float = 900.0  # seconds a failure counts
    max_pending: int = 4  # password checks in flight; more are refused at once
    hash_workers: int = 1  # threads that hash passwords (apart from the pages' threads)

    def __post_init__(self) -> None:
        for name in ("per_account", "per_client", "max_pending", "hash_workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.window <= 0:
            raise ValueError("window must be positive")


@dataclass(frozen=True)
class Refused:
    """A login turned away unchecked: why (safe to show) and when to try again."""

    reason: str
    retry_after: int  # whole seconds


_Key = tuple[str, str]  # ("client", address) or ("account", user name)


@dataclass
class Attempt:
    """An admitted login: counted as pending until ``settle`` says how it went."""

    throttle: LoginThrottle
    keys: tuple[_Key, _Key]
    settled: bool = field(default=False, init=False)

    def settle(self, ok: bool) -> None:
        """Release the attempt's places; a failure is then counted for the window."""
        if not self.settled:
            self.settled = True
            self.throttle._settle(self.keys, ok)


class LoginThrottle:
    """Admits or refuses login attempts (see the module docstring)."""

    def __init__(
        self,
        limits: LoginLimits,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._max_keys = max_keys
        # key -> times of recent failures, oldest first; the dict in least-recent order.
        self._failures: OrderedDict[_Key, deque[float]] = OrderedDict()
        self._pending: Counter[_Key] = Counter()
        self.in_flight = 0

    def admit(self, client: str, account: str) -> Attempt | Refused:
        """An ``Attempt`` to check the password for, or why not and for how long."""
        limits = self.limits
        if self.in_flight >= limits.max_pending:
            return Refused("too many logins are being checked at this moment", 1)
        now = self._clock()
        keys: tuple[_Key, _Key] = (("client", client), ("account", account))
        for key, limit in zip(keys, (limits.per_client, limits.per_account), strict=True):
            recent = self._recent(key, now)
            if len(recent) + self._pending[key] >= limit:
                wait = recent[0] + limits.window - now if len(recent) >= limit else 1.0
                what = "from this address" if key[0] == "client" else "for this user name"
                return Refused(f"too many failed logins {what}", max(1, math.ceil(wait)))
        for key in keys:
            self._pending[key] += 1
        self.in_flight += 1
        return Attempt(self, keys)

    def failures(self, kind: str, name: str) -> int:
        """Failures counted now for a client (``kind="client"``) or an account."""
        return len(self._recent((kind, name), self._clock()))

    def _recent(self, key: _Key, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.limits.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def _settle(self, keys: tuple[_Key, _Key], ok: bool) -> None:
        self.in_flight -= 1
        for key in keys:
            self._pending[key] -= 1
            if self._pending[key] <= 0:
                del self._pending[key]
        if ok:
            # The client proved it knows the password: its own mistakes are forgiven.
            # The account's are not, so a success cannot reset a guesser's count.
            self._failures.pop(keys[0], None)
            return
        now = self._clock()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)
            self._failures.move_to_end(key)
        self._forget_oldest(now)

    def _forget_oldest(self, now: float) -> None:
        # Bounded memory however many addresses or user names are tried: expired entries
        # go first, then the least recently failed.
        if len(self._failures) <= self._max_keys:
            return
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) > self._max_keys:
            self._failures.popitem(last=False)
