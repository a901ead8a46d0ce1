"""Opening the disclosure log with the keys a reader or an operator needs.

Every command and the review page go through here, so they agree on which key files they
read and in which order:

* the **signing key** (``gateway-signing.key``) is loaded only when the caller asks for it:
  ``signing="never"`` for readers (list, reports, the review page), ``"if_present"`` for
  work that is exact with it and still sound without it (verification names the exact bad
  record only with the signing key; proofs), ``"required"`` for writers (checkpoint,
  prune);
* the **verify key** that checks checkpoint signatures is the published public key
  (``gateway-signing.pub``): it is what agents and auditors check against, so a log that
  verifies here verifies for them. When that file is missing or unreadable, the public
  half of the signing key stands in, if the signing key is present and readable. Otherwise
  the public key's own error is raised: it names the file and says how to make it;
* the **pseudonym keys** (``pseudonym.key`` and, after a rotation, the earlier ones kept
  under ``history/pseudonym``) turn a customer id into the log's subject references, one
  per pseudonym period: a subject's history is found across rotations.

The ledger must exist: opening never creates one (only the stream sink and the replay do).
"""

from __future__ import annotations

from typing import Literal

from gateway import keys as keystore
from gateway.crypto import SigningKey, VerifyKey
from gateway.errors import ConfigError
from gateway.ledger.store import LedgerStore, open_store
from gateway.pseudonyms import PseudonymKeyring
from gateway.rotation import load_pseudonym_keyring
from gateway.settings import Settings

Signing = Literal["never", "if_present", "required"]


def signing_key(settings: Settings, *, required: bool = False) -> SigningKey | None:
    """The gateway signing key; None if it is absent and not ``required``. A file that is
    present but unusable (wrong mode, not a key) is always an error."""
    path = settings.signing_key_path
    if not required and not path.exists():
        return None
    return keystore.load_signing_key(path)


def verify_key(settings: Settings) -> VerifyKey:
    """The key that checks checkpoint signatures: the published public key, else the
    public half of the signing key (the order is explained in the module docstring)."""
    try:
        return keystore.load_verify_key(settings.signing_public_key_path)
    except ConfigError:
        if settings.signing_key_path.exists():
            try:
                return keystore.load_signing_key(settings.signing_key_path).public_key()
            except ConfigError:
                pass
        raise


def pseudonym_key(settings: Settings) -> bytes:
    """The current pseudonym master key."""
    return keystore.load_pseudonym_key(settings.pseudonym_key_path)


def pseudonyms(settings: Settings) -> PseudonymKeyring:
    """Every pseudonym period's key, current first."""
    return load_pseudonym_keyring(settings.keys_dir)


def subject_refs_of(settings: Settings, customer_id: str) -> list[str]:
    """Every subject reference ``customer_id`` has had in the log, one per pseudonym period,
    current first (needs the pseudonym keys)."""
    return pseudonyms(settings).subject_refs(customer_id)


def open_ledger(settings: Settings, *, signing: Signing = "never") -> LedgerStore:
    """The existing ledger at ``settings.ledger_url``, with the signing key as ``signing``
    asks (see the module docstring) and the log origin ``settings.log_origin`` (a log
    checkpointed under another origin refuses to sign: a log keeps its origin). A missing
    ledger is a ``LedgerError`` that says how to make one."""
    signer = None if signing == "never" else signing_key(settings, required=signing == "required")
    return open_store(
        settings.ledger_url,
        signer=signer,
        create=False,
        checkpoint_every=settings.checkpoint_every,
        origin=settings.log_origin,
    )
