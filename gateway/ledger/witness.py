"""A witness: an outsider (an agent, an auditor) who cosigns the log's checkpoints after
checking that the log only grew since the last checkpoint it cosigned.

This follows the C2SP tlog-witness ``add-checkpoint`` rules, as a command instead of an
HTTP service, with this log's per-shard consistency proofs:

* the checkpoint must carry a valid signature of a trusted log key (``--log-key``, plus
  keys reached through hand-over notes), under the key name equal to its origin;
* the witness keeps, per origin, the latest checkpoint it cosigned. A new checkpoint of a
  smaller size is refused (the log was rolled back); one of the same shards, sizes and
  roots is cosigned again; any other needs a consistency proof bundle from the kept
  checkpoint to the new one (``gateway log prove-consistency``), checked shard by shard;
* the new checkpoint is stored before the cosignature is given out, under a lock, so two
  concurrent cosignings cannot roll the witness's state back;
* the answer is one cosignature line (C2SP tlog-cosignature v1, Ed25519, signature type
  0x04): ``— <witness name> base64(key ID || u64 time || Ed25519 signature)`` over
  ``"cosignature/v1\\ntime <t>\\n" || checkpoint text``.

The witness directory holds::

    witness.key            Ed25519 private key, PKCS8 PEM, mode 0600
    witness.vkey           its verifier key: <name>+<key ID>+base64(0x04 || public key)
    logs/<sha256(origin) hex>.checkpoint   the latest cosigned checkpoint of each log
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway import keys as keystore
from gateway.crypto import SigningKey, VerifyKey
from gateway.errors import KeyFileError, LedgerError, SignatureError, VerificationError
from gateway.ledger.consistency import ConsistencyProof
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.signed_notes import (
    CosignatureKey,
    Note,
    chain_keys,
    check_key_name,
    cosign,
    parse_handover,
)

WITNESS_KEY: Final = "witness.key"
WITNESS_VKEY: Final = "witness.vkey"
LOGS_DIR: Final = "logs"
_LOCK: Final = ".lock"


@dataclass(frozen=True)
class Cosigned:
    """A cosignature given: its line, the checkpoint, and the one cosigned before."""

    line: str
    checkpoint: LogCheckpoint
    previous: LogCheckpoint | None
    timestamp: int

    def cosigned_note(self) -> str:
        """The checkpoint with this cosignature added, as the witness keeps it."""
        return self.checkpoint.to_text() + self.line


def _write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` whole or not at all: a temporary file, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class Witness:
    """A witness's key and state directory."""

    def __init__(self, directory: Path, name: str, key: SigningKey) -> None:
        self.dir = directory
        self.name = check_key_name(name)
        self.key = key

    @property
    def public(self) -> CosignatureKey:
        return CosignatureKey(self.name, self.key.public_key())

    @property
    def vkey(self) -> str:
        return self.public.vkey()

    @classmethod
    def init(cls, directory: Path, name: str) -> Witness:
        """Make a new witness in ``directory`` (refuses to replace an existing one)."""
        try:
            check_key_name(name)
        except SignatureError as exc:
            raise LedgerError(
                f"witness name {name!r} is invalid: use a schema-less URL without spaces or"
                " '+', e.g. auditor.example.com/witness"
            ) from exc
        key_path = directory / WITNESS_KEY
        if key_path.exists():
            raise KeyFileError(f"{key_path} already exists; refusing to replace a witness key")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        (directory / LOGS_DIR).mkdir(mode=0o700, exist_ok=True)
        key = SigningKey.generate()
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key.to_pem())
        witness = cls(directory, name, key)
        _write_file(directory / WITNESS_VKEY, (witness.vkey + "\n").encode("utf-8"), 0o644)
        return witness

    @classmethod
    def open(cls, directory: Path) -> Witness:
        key_path, vkey_path = directory / WITNESS_KEY, directory / WITNESS_VKEY
        for p in (key_path, vkey_path):
            if not p.is_file():
                raise KeyFileError(
                    f"{p} not found: {directory} is not a witness directory; make one with"
                    " `gateway log witness init --name NAME --out DIR`"
                )
        keystore.check_private_mode(key_path)
        key = SigningKey.from_pem(key_path.read_bytes())
        vkey = CosignatureKey.parse(vkey_path.read_text(encoding="utf-8"))
        if vkey.key != key.public_key():
            raise KeyFileError(f"{vkey_path} is not the public half of {key_path}")
        return cls(directory, vkey.name, key)

    # -- state ----------------------------------------------------------------------------

    def state_path(self, origin: str) -> Path:
        digest = hashlib.sha256(origin.encode("utf-8")).hexdigest()
        return self.dir / LOGS_DIR / f"{digest}.checkpoint"

    def latest(self, origin: str) -> LogCheckpoint | None:
        """The last checkpoint of ``origin`` this witness cosigned."""
        path = self.state_path(origin)
        if not path.exists():
            return None
        return LogCheckpoint.parse(path.read_text(encoding="utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        (self.dir / LOGS_DIR).mkdir(mode=0o700, exist_ok=True)
        fd = os.open(self.dir / _LOCK, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- cosigning ------------------------------------------------------------------------

    def cosign(
        self,
        checkpoint_text: str,
        log_keys: Sequence[VerifyKey],
        proof_text: str | None = None,
        *,
        handovers: Sequence[str] = (),
        now: int | None = None,
    ) -> Cosigned:
        """Check ``checkpoint_text`` and cosign it; raises ``VerificationError`` saying
        why it is refused (nothing is stored then)."""
        cp = LogCheckpoint.parse(checkpoint_text)
        try:
            chain = chain_keys(log_keys, [parse_handover(h) for h in handovers])
        except SignatureError as exc:
            raise VerificationError(f"a hand-over note does not check: {exc}") from exc
        cp.verify([k for k, _ in chain.values()])
        proof = None if proof_text is None else ConsistencyProof.parse(proof_text)
        with self._locked():
            previous = self.latest(cp.origin)
            if previous is not None:
                self._check_extends(previous, cp, proof)
            stamp = int(time.time()) if now is None else now
            sig = cosign(cp.text, self.name, self.key, stamp)
            kept = Note(cp.text, cp.note.signatures).with_signatures(sig)
            _write_file(self.state_path(cp.origin), kept.to_text().encode("utf-8"), 0o600)
        return Cosigned(sig.line(), cp, previous, stamp)

    def _check_extends(
        self, previous: LogCheckpoint, cp: LogCheckpoint, proof: ConsistencyProof | None
    ) -> None:
        if cp.size < previous.size:
            raise VerificationError(
                f"refused: the log {cp.origin} was rolled back. This witness cosigned size"
                f" {previous.size} ({previous.time}); the checkpoint offered has size {cp.size}"
            )
        if cp.same_tree(previous):
            return
        kept = self.state_path(cp.origin)
        if proof is None:
            raise VerificationError(
                f"refused: a consistency proof is needed from the checkpoint this witness last"
                f" cosigned (size {previous.size}, kept in {kept}). Make it with `gateway log"
                f" prove-consistency --from {kept} --to CHECKPOINT`"
            )
        if (proof.old_size, proof.old_root) != (previous.size, previous.root):
            raise VerificationError(
                f"refused: the proof starts from a checkpoint of size {proof.old_size}, but this"
                f" witness last cosigned size {previous.size} (kept in {kept}). Make the proof"
                f" from that one: `gateway log prove-consistency --from {kept} --to CHECKPOINT`"
            )
        try:
            proof.check(previous, cp)
        except VerificationError as exc:
            raise VerificationError(
                f"refused: the checkpoint of size {cp.size} is not consistent with the one of"
                f" size {previous.size} this witness cosigned ({previous.time}): {exc}"
            ) from exc
