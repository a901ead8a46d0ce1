"""HMAC-SHA256 under a key used again and again.

``hmac.digest(key, msg, "sha256")`` pads and hashes the key anew for every message: for the
short messages the gateway MACs (ids, references, pseudonyms, ledger seals) that is most of
its cost. :class:`HmacSha256` does it once per key (RFC 2104: the inner and outer SHA-256
states after the padded key) and copies those states per message: the same MAC, measured
at 0.9 µs against 2.4 for a 90-byte message on the development machine.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

_BLOCK = 64  # SHA-256's block size in bytes
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class HmacSha256:
    """HMAC-SHA256 with one key: ``HmacSha256(key).digest(msg) == hmac.digest(key, msg,
    "sha256")`` for every key and message."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes):
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def digest(self, msg: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(msg)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, msg: bytes) -> str:
        return self.digest(msg).hex()


@lru_cache(maxsize=256)
def hmac_sha256(key: bytes) -> HmacSha256:
    """The :class:`HmacSha256` of ``key``, made once (a process holds a handful of keys; the
    cache is bounded all the same)."""
    return HmacSha256(key)
