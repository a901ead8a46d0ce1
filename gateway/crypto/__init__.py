"""What an agent receives: per-agent sealing (encrypted to the agent alone, signed by the
gateway, bound to its event and disclosure) and the agent-side opener.

Scheme
------
*Keys.* The gateway signs with Ed25519. Each agent has an X25519 key pair; the gateway only
ever holds the agent's public key; agents may hold several private keys (after a rotation).

*Data keys (DEKs).* A :class:`Sealer` holds one random AES-256-GCM key per agent and
rotates it after ``rotate_messages`` messages or ``rotate_seconds`` seconds. Public-key work
(an HPKE seal of the DEK and an Ed25519 signature) happens only on rotation, so the cost of
one message is one AES-GCM encryption plus some JSON.

*Key envelope* (built once per DEK)::

    {"v": 1, "agent": A, "key_id": K, "created_at": "...Z", "signer": <gateway key id>,
     "recipient": <agent key id>,                       (optional)
     "handover": [<signed note>, ...],                  (optional)
     "enc": b64(HPKE_seal(pk_A, DEK, info=canon({"agent": A, "key_id": K, "use": ..., "v": 1}))),
     "sig": b64(Ed25519(ENVELOPE_SIG_CONTEXT + canon(envelope without "sig")))}

``recipient`` names the agent public key the DEK was sealed to: an agent holding several
private keys (its current one and those from before a rotation) picks by it, and tries each
when an envelope does not say. ``handover`` lists the C2SP signed notes, oldest first, by
which earlier gateway signing keys handed over to ``signer`` (``gateway.signed_notes``; the
gateway puts its latest few here): a reader that trusts an earlier key verifies the chain
and then trusts the signer too.

*Message* (the bytes put on the agent's topic)::

    {"header": H, "envelope": E, "ciphertext": b64(AES-256-GCM(DEK, nonce, payload, aad=canon(H)))}
    H = {"v": 2, "agent": A, "ref": ..., "disclosure_id": ..., "key_id": K,
         "kind": "disclosure" | "erasure_notice", "nonce": b64(12 random bytes)}

``ref`` is the agent's own reference for the event (keyed per agent, so two agents' refs for
one event are unrelated); version 1 headers carried the publisher's ``event_id`` in its
place and are still read.

``canon`` is JSON with sorted keys, no whitespace, UTF-8 (for the string and integer values
used here this coincides with RFC 8785). The header is written in its canonical form, so
its bytes on the wire are exactly the AAD.

Every message carries its envelope, so an agent needs only its private key(s) and a gateway
public signing key it trusts to read any single message; the :class:`Opener` caches
verified envelopes so that reading a stream costs AES-GCM per message too.
"""

from __future__ import annotations

from gateway.crypto.derive import derive_key, subject_ref
from gateway.crypto.envelope import (
    ENVELOPE_SIG_CONTEXT,
    ENVELOPE_VERSION,
    KINDS,
    MAX_HANDOVERS,
    WIRE_VERSION,
)
from gateway.crypto.handover import GatewayKeyring
from gateway.crypto.keys import AgentPrivateKey, AgentPublicKey, SigningKey, VerifyKey
from gateway.crypto.mac import HmacSha256, hmac_sha256
from gateway.crypto.opening import Opened, Opener
from gateway.crypto.sealing import Sealed, Sealer

__all__ = [
    "ENVELOPE_SIG_CONTEXT",
    "ENVELOPE_VERSION",
    "KINDS",
    "MAX_HANDOVERS",
    "WIRE_VERSION",
    "AgentPrivateKey",
    "AgentPublicKey",
    "GatewayKeyring",
    "HmacSha256",
    "Opened",
    "Opener",
    "Sealed",
    "Sealer",
    "SigningKey",
    "VerifyKey",
    "derive_key",
    "hmac_sha256",
    "subject_ref",
]
