"""Derived keys (HKDF) and the disclosure log's subject references."""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.mac import hmac_sha256

_HKDF_INFO_PREFIX: Final = b"disclosure-gateway/derive/v1:"


def derive_key(master: bytes, label: str) -> bytes:
    """A 32-byte key for ``label`` (HKDF-SHA256), e.g. ``"pseudonym:" + agent``.

    Distinct labels give independent keys, so pseudonyms made for one agent cannot be
    joined with another agent's.
    """
    if len(master) < 16:
        raise ValueError("master key must be at least 16 bytes")
    if not label:
        raise ValueError("label must be non-empty")
    return _derive_cached(bytes(master), label)


@lru_cache(maxsize=1024)
def _derive_cached(master: bytes, label: str) -> bytes:
    # Cached because pseudonym and subject_ref keys are needed per event and HKDF is the
    # most expensive step of a pseudonym.
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_HKDF_INFO_PREFIX + label.encode("utf-8"),
    ).derive(master)


def subject_ref(master: bytes, customer_id: str, key_id: str | None = None) -> str:
    """The disclosure log's pseudonym for a customer: ``subj_`` + 32 hex characters, or
    ``subj_<key_id>_`` + 32 hex when the master key's id is given (keys after the first
    name themselves in the reference; see ``gateway.pseudonyms``).

    Keyed (a derived key, not the master itself), so the log holds nothing that links back
    to a customer without the pseudonym key.
    """
    key = derive_key(master, "subject-ref")
    mac = hmac_sha256(key).hexdigest(customer_id.encode("utf-8"))
    return "subj_" + (f"{key_id}_" if key_id else "") + mac[:32]
