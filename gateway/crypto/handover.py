"""The gateway public keys a reader trusts, grown by the signing-key hand-overs
(``gateway.signed_notes``) that key envelopes carry."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from gateway import errors, signed_notes
from gateway.crypto.keys import VerifyKey


class GatewayKeyring:
    """The gateway public keys a reader trusts, grown by verified hand-overs.

    Thread-safe. Keys given at construction are trusted as configured; a key learned from
    a hand-over (``gateway.signed_notes``) is trusted because a key already trusted signed
    the hand-over to it, and the new key countersigned it.
    """

    def __init__(self, keys: Iterable[VerifyKey]):
        self._keys: dict[str, VerifyKey] = {}
        for key in keys:
            self._keys[key.key_id] = key
        if not self._keys:
            raise ValueError("a reader must trust at least one gateway key")
        self._learned: list[signed_notes.Handover] = []
        self._lock = threading.Lock()

    @property
    def keys(self) -> tuple[VerifyKey, ...]:
        return tuple(self._keys.values())

    @property
    def learned(self) -> tuple[signed_notes.Handover, ...]:
        """The hand-overs accepted so far, in order (save ``new`` to keep trusting it)."""
        return tuple(self._learned)

    def get(self, key_id: str) -> VerifyKey | None:
        return self._keys.get(key_id)

    def accept_handovers(self, notes: Iterable[str]) -> None:
        """Trust each new key that a hand-over from a trusted key leads to, in order.

        A hand-over from a key not trusted here is skipped (it may lead to a key trusted
        already, or come before the key this reader was given); a note that does not check
        (altered, forged, not signed by both its keys) raises ``SignatureError``.
        """
        for note in notes:
            handover = signed_notes.parse_handover(note)
            if handover.new.key_id in self._keys or handover.old.key_id not in self._keys:
                continue
            if self._keys[handover.old.key_id] != handover.old:
                raise errors.SignatureError(
                    f"key hand-over from {handover.old.key_id}: its key is not the one trusted"
                )
            with self._lock:
                self._keys.setdefault(handover.new.key_id, handover.new)
                self._learned.append(handover)

    def __repr__(self) -> str:
        return f"GatewayKeyring({', '.join(self._keys)})"
