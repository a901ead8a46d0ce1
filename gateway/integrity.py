"""Messages only a gateway worker can write: an HMAC with the workers' shared key on every
message that other workers or the ledger sink act on.

Anyone who can reach the broker can write to the gateway's own topics; without this, a
record written straight to the disclosure topic was sealed into the log, a forged offset
marker on the consent changelog made a worker skip events, and a forged "forwarded"
event would have been decided for any customer. Each kind of message gets its own key
(derived from ``worker.key`` under its own label), so a MAC of one kind never passes as
another:

* ``record`` -- a decision record on the disclosure topic (the sink quarantines a record
  whose MAC does not verify instead of logging it);
* ``changelog`` -- a consent-table entry or progress marker, over its key and value (a
  restore ignores an entry whose MAC does not verify);
* ``forward`` -- an event re-routed to its subject's partition, over the event bytes, the
  publisher's headers and where it was read (the deciding worker rejects a forwarded
  event whose MAC does not verify).

The MAC travels in the ``gateway-mac`` header as lowercase hex. Pure: no Kafka.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from typing import Any, Final

from gateway.crypto import derive_key, hmac_sha256

HEADER_MAC: Final = "gateway-mac"

_SEP: Final = b"\x1f"


def header(headers: Iterable[tuple[str, bytes | None]] | None, name: str) -> bytes | None:
    """The value of the first header called ``name`` (None when absent)."""
    for key, value in headers or ():
        if key == name:
            return value
    return None


def header_pairs(raw: Any) -> list[tuple[str, bytes]]:
    """A Kafka message's headers as (name, value) pairs, however the client gives them (a
    list of pairs, a dict, None); a None value as empty bytes."""
    if not raw:
        return []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(k, v if v is not None else b"") for k, v in pairs]


class WorkerMac:
    """MACs for the messages workers write for each other and for the sink."""

    __slots__ = ("_changelog", "_forward", "_record")

    def __init__(self, worker_key: bytes):
        self._record = derive_key(worker_key, "mac:record")
        self._changelog = derive_key(worker_key, "mac:changelog")
        self._forward = derive_key(worker_key, "mac:forward")

    @staticmethod
    def _mac(key: bytes, parts: Sequence[bytes]) -> bytes:
        # Length-prefixed parts: no two different part lists give the same message. One
        # joined message, the key's padded states computed once (every record pays it).
        msg = b"".join(len(part).to_bytes(8, "big") + part for part in parts)
        return hmac_sha256(key).hexdigest(msg).encode("ascii")

    @staticmethod
    def _same(expected: bytes, got: bytes | None) -> bool:
        return got is not None and hmac.compare_digest(expected, got)

    # --- decision records ---------------------------------------------------------------

    def record(self, value: bytes) -> bytes:
        return self._mac(self._record, (value,))

    def record_ok(self, value: bytes, mac: bytes | None) -> bool:
        return self._same(self.record(value), mac)

    # --- consent changelog ----------------------------------------------------------------

    def changelog(self, key: bytes, value: bytes | None) -> bytes:
        # A tombstone (None) and an empty value are different messages.
        return self._mac(self._changelog, (key, b"\x00" if value is None else b"\x01" + value))

    def changelog_ok(self, key: bytes, value: bytes | None, mac: bytes | None) -> bool:
        return self._same(self.changelog(key, value), mac)

    # --- forwarded events -----------------------------------------------------------------

    def forward(
        self, value: bytes, origin: bytes, publisher_headers: Sequence[tuple[str, bytes]]
    ) -> bytes:
        parts = [value, origin]
        for k, v in publisher_headers:
            parts += [k.encode("utf-8"), v]
        return self._mac(self._forward, parts)

    def forward_ok(
        self,
        value: bytes,
        origin: bytes,
        publisher_headers: Sequence[tuple[str, bytes]],
        mac: bytes | None,
    ) -> bool:
        return self._same(self.forward(value, origin, publisher_headers), mac)
