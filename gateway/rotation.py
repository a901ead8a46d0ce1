"""Rotating each key on its own, and the key history that keeps old material usable.

Gateway side, under the keys directory::

    history/signing/<file id>.pub        an earlier gateway public signing key
    history/signing/<file id>.handover   the signed note by which the previous key handed
                                         over TO the key <file id> (signed by both keys)
    history/signing/handover-chain       every hand-over to the current key, oldest first:
                                         what an agent or auditor holding an older key needs
    history/pseudonym/<key id>.key       every pseudonym master key, the current one too (0600)
    history/pseudonym/periods            the pseudonym periods in order, oldest first

Agent side, in the agent's own directory (e.g. ``./agent-keys``)::

    <name>.key, <name>.pub               the current key pair
    <name>.<file id>.key                 earlier private keys, kept to read the backlog

A *file id* is a key id with ``:`` replaced by ``-`` (``ed25519-0123456789abcdef``), so no
file name holds a ``:`` (which scp and rsync read as a host separator).

Each rotation writes the new material before it retires the old, and replaces a key file
atomically: a crash leaves either the old key in use or the new one, never neither. Where a
crash can leave a rotation half done, running the same command again finishes it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gateway import errors
from gateway.crypto import AgentPrivateKey, AgentPublicKey, SigningKey, VerifyKey
from gateway.keys import (
    AgentKeyPaths,
    agent_key_paths,
    agent_keypair_paths,
    check_key_dir,
    gateway_key_paths,
    load_agent_private_key,
    load_pseudonym_key,
    load_signing_key,
    load_verify_key,
    make_key_dir,
    read_public_file,
    write_key_file,
)
from gateway.pseudonyms import PseudonymKeyring, PseudonymPeriod, pseudonym_key_id
from gateway.signed_notes import chain_text, make_handover, parse_handover, verify_handover

__all__ = [
    "HANDOVER_CHAIN",
    "PERIODS_FILE",
    "PSEUDONYM_HISTORY",
    "SIGNING_HISTORY",
    "AgentRotation",
    "PseudonymRotation",
    "SigningRotation",
    "archived_agent_key_path",
    "key_file_id",
    "load_agent_private_keys",
    "load_pseudonym_keyring",
    "rotate_agent_key",
    "rotate_pseudonym_key",
    "rotate_signing_key",
    "signing_handover_chain",
    "signing_key_history",
]

SIGNING_HISTORY: Final = Path("history") / "signing"
PSEUDONYM_HISTORY: Final = Path("history") / "pseudonym"
PERIODS_FILE: Final = "periods"
HANDOVER_CHAIN: Final = "handover-chain"

_PSEUDONYM_BYTES: Final = 32
_PERIODS_HEADER: Final = (
    "# Pseudonym key periods, oldest first: <key id> <started (RFC 3339) or -> [original]\n"
    "# Written by `gateway keys rotate pseudonym`; the last line is pseudonym.key.\n"
)
_PERIOD_LINE: Final = re.compile(
    r"([0-9a-f]{4}) (-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)( original)?"
)
_AGENT_ARCHIVE: Final = r"\.x25519-[0-9a-f]{16}\.key"


def key_file_id(key_id: str) -> str:
    """The key id as it appears in file names: ``:`` replaced by ``-``."""
    return key_id.replace(":", "-")


def _utc(now: datetime | None) -> datetime:
    return (now or datetime.now(UTC)).astimezone(UTC)


def _rfc3339(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_or_same(path: Path, data: bytes, *, private: bool) -> None:
    """Create ``path``; an existing file with exactly ``data`` is fine (a repeated run)."""
    if path.exists():
        try:
            same = path.read_bytes() == data
        except OSError as exc:
            raise errors.KeyFileError(f"cannot read {path}: {exc.strerror}") from exc
        if same:
            return
    write_key_file(path, data, private=private)


# --------------------------------------------------------------------------------------
# the gateway signing key


@dataclass(frozen=True)
class SigningRotation:
    """What ``rotate_signing_key`` did: public facts and paths only."""

    old: VerifyKey
    new: VerifyKey
    archived: Path  # the old public key, kept
    handover_path: Path
    handover: str
    chain_path: Path  # every hand-over to the new key, oldest first
    resumed: bool = False  # True: this run finished a rotation a crash had interrupted


def rotate_signing_key(
    keys_dir: Path | str,
    now: datetime | None = None,
    before_switch: Callable[[str, Path], None] | None = None,
) -> SigningRotation:
    """Replace the gateway signing key with a new one that the old key hands over to.

    The old public key is kept as ``history/signing/<old file id>.pub``; the hand-over
    note (signed by the old and the new key) is written to
    ``history/signing/<new file id>.handover``, and the whole chain to
    ``history/signing/handover-chain``. The old private key is gone afterwards.

    ``before_switch(note, note_path)`` runs once the note is written and before the new key
    replaces the old one, so that whatever must know the hand-over before a process starts
    with the new key (the ledger: ``gateway log record-handover``) learns it first. If it
    raises, the rotation stops there: the old key stays and the note is removed.
    """
    paths = gateway_key_paths(keys_dir)
    hist = paths.dir / SIGNING_HISTORY
    check_key_dir(paths.dir)
    current = load_signing_key(paths.signing_key)
    published = load_verify_key(paths.signing_pub)
    if published != current.public_key():
        return _finish_signing_rotation(paths.signing_pub, hist, current, published, before_switch)

    old = current.public_key()
    new = SigningKey.generate()
    make_key_dir(hist)
    archived = hist / f"{key_file_id(old.key_id)}.pub"
    _write_or_same(archived, old.to_pem(), private=False)
    note = make_handover(current, new, _utc(now))
    note_path = hist / f"{key_file_id(new.key_id)}.handover"
    write_key_file(note_path, note.encode("utf-8"), private=False)
    if before_switch is not None:
        try:
            before_switch(note, note_path)
        except BaseException:
            note_path.unlink()  # a hand-over to a key that never took over
            raise
    # The private key before the public one: a crash between the two leaves a mismatch
    # that the hand-over just written explains, and that a second run finishes.
    write_key_file(paths.signing_key, new.to_pem(), private=True, replace=True)
    write_key_file(paths.signing_pub, new.public_key().to_pem(), private=False, replace=True)
    chain_path = _write_chain(keys_dir, new.public_key())
    return SigningRotation(old, new.public_key(), archived, note_path, note, chain_path)


def _finish_signing_rotation(
    pub_path: Path,
    hist: Path,
    current: SigningKey,
    published: VerifyKey,
    before_switch: Callable[[str, Path], None] | None,
) -> SigningRotation:
    note_path = hist / f"{key_file_id(current.key_id)}.handover"
    if note_path.exists():
        note = _read_note(note_path)
        try:
            handover = parse_handover(note)
        except errors.SignatureError as exc:
            raise errors.KeyFileError(f"{note_path}: {exc}") from exc
        if handover.old == published and handover.new == current.public_key():
            if before_switch is not None:
                before_switch(note, note_path)
            write_key_file(pub_path, current.public_key().to_pem(), private=False, replace=True)
            archived = hist / f"{key_file_id(published.key_id)}.pub"
            chain_path = _write_chain(pub_path.parent, current.public_key())
            return SigningRotation(
                published,
                current.public_key(),
                archived,
                note_path,
                note,
                chain_path,
                resumed=True,
            )
    raise errors.KeyFileError(
        f"{pub_path} ({published.key_id}) does not match the signing key"
        f" ({current.key_id}) and no hand-over explains it; restore the matching pair"
        " before rotating"
    )


def _write_chain(keys_dir: Path | str, current: VerifyKey) -> Path:
    path = Path(keys_dir) / SIGNING_HISTORY / HANDOVER_CHAIN
    text = chain_text(signing_handover_chain(keys_dir, current))
    write_key_file(path, text.encode("utf-8"), private=False, replace=path.exists())
    return path


def _read_note(path: Path) -> str:
    data = read_public_file(path, "key hand-over", "it is written by `gateway keys rotate signing`")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.KeyFileError(f"{path}: not a key hand-over note (not UTF-8)") from exc


def signing_handover_chain(
    keys_dir: Path | str, current: VerifyKey, limit: int | None = None
) -> list[str]:
    """The hand-over notes leading to ``current``, oldest first: all of them, or the
    ``limit`` most recent ones (what key envelopes carry, so that agents trusting one of
    the last ``limit`` earlier keys follow on their own).

    Each note is checked (signed by both its keys) and its old key against the archived
    public key of that id.
    """
    hist = Path(keys_dir) / SIGNING_HISTORY
    chain: list[str] = []
    key = current
    seen = {current.key_id}
    while limit is None or len(chain) < limit:
        note_path = hist / f"{key_file_id(key.key_id)}.handover"
        if not note_path.exists():
            break
        note = _read_note(note_path)
        try:
            handover = parse_handover(note)
        except errors.SignatureError as exc:
            raise errors.KeyFileError(f"{note_path}: {exc}") from exc
        if handover.new != key:
            raise errors.KeyFileError(
                f"{note_path} hands over to {handover.new.key_id}, not {key.key_id}"
            )
        old_path = hist / f"{key_file_id(handover.old.key_id)}.pub"
        old = load_verify_key(old_path)
        try:
            verify_handover(note, [old])
        except errors.SignatureError as exc:
            raise errors.KeyFileError(
                f"{note_path}: {exc} ({old_path} holds {old.key_id})"
            ) from exc
        chain.append(note)
        if old.key_id in seen:  # a cycle: every key of it is already on the chain
            break
        seen.add(old.key_id)
        key = old
    chain.reverse()
    return chain


def signing_key_history(keys_dir: Path | str) -> list[VerifyKey]:
    """Every earlier gateway public signing key kept under ``history/signing`` (what old
    envelopes and checkpoints verify with), by file name."""
    hist = Path(keys_dir) / SIGNING_HISTORY
    if not hist.is_dir():
        return []
    return [load_verify_key(p) for p in sorted(hist.glob("*.pub"))]


# --------------------------------------------------------------------------------------
# the pseudonym key


@dataclass(frozen=True)
class _Period:
    key_id: str
    started: str
    original: bool

    def line(self) -> str:
        return f"{self.key_id} {self.started}{' original' if self.original else ''}\n"


def _read_periods(path: Path) -> list[_Period]:
    text = read_public_file(path, "pseudonym periods", "it is written by `gateway keys rotate`")
    periods = []
    for n, line in enumerate(text.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = _PERIOD_LINE.fullmatch(line.strip())
        if m is None:
            raise errors.KeyFileError(
                f"{path}:{n}: expected '<4 hex key id> <RFC 3339 time or -> [original]'"
            )
        periods.append(_Period(m.group(1), m.group(2), m.group(3) is not None))
    if not periods:
        raise errors.KeyFileError(f"{path} lists no pseudonym key")
    return periods


def _hex_key(master: bytes) -> bytes:
    return (master.hex() + "\n").encode("ascii")


def _new_pseudonym_master() -> bytes:
    return secrets.token_bytes(_PSEUDONYM_BYTES)


def load_pseudonym_keyring(keys_dir: Path | str) -> PseudonymKeyring:
    """Every pseudonym period, current first: ``pseudonym.key`` and, after a rotation, the
    keys listed in ``history/pseudonym/periods``. Before any rotation the current key is
    the original one (references without a key id)."""
    paths = gateway_key_paths(keys_dir)
    master = load_pseudonym_key(paths.pseudonym_key)
    hist = paths.dir / PSEUDONYM_HISTORY
    periods_path = hist / PERIODS_FILE
    if not periods_path.exists():
        return PseudonymKeyring.single(master)
    listed = _read_periods(periods_path)
    current_id = pseudonym_key_id(master)
    if listed[-1].key_id != current_id:
        if any(p.key_id == current_id for p in listed):
            fix = "an interrupted `gateway keys rotate pseudonym`: run it again to finish it"
        else:
            fix = (
                f"{paths.pseudonym_key} was replaced outside `gateway keys rotate pseudonym`;"
                f" restore it from {hist / (listed[-1].key_id + '.key')}"
            )
        raise errors.KeyFileError(
            f"{paths.pseudonym_key} has key id {current_id} but the newest period in"
            f" {periods_path} is {listed[-1].key_id}: {fix}"
        )
    periods = []
    for p in reversed(listed):
        if p.key_id == current_id:
            key = master
        else:
            path = hist / f"{p.key_id}.key"
            key = load_pseudonym_key(path)
            if pseudonym_key_id(key) != p.key_id:
                raise errors.KeyFileError(
                    f"{path} holds the key with id {pseudonym_key_id(key)}, not {p.key_id}"
                )
        periods.append(PseudonymPeriod(key, original=p.original))
    try:
        return PseudonymKeyring(periods)
    except ValueError as exc:
        raise errors.KeyFileError(f"{periods_path}: {exc}") from exc


@dataclass(frozen=True)
class PseudonymRotation:
    old_key_id: str
    new_key_id: str
    archived: Path  # where the old key is kept (0600)
    resumed: bool = False


def rotate_pseudonym_key(keys_dir: Path | str, now: datetime | None = None) -> PseudonymRotation:
    """Start a new pseudonym period with a new master key.

    New subject references name the new key (``subj_<key id>_...``); every earlier key is
    kept under ``history/pseudonym`` so reports and erasure still find a subject's older
    references. Per-agent pseudonyms derive from the new key, so they change too.
    """
    paths = gateway_key_paths(keys_dir)
    hist = paths.dir / PSEUDONYM_HISTORY
    check_key_dir(paths.dir)
    master = load_pseudonym_key(paths.pseudonym_key)
    current_id = pseudonym_key_id(master)
    periods_path = hist / PERIODS_FILE
    listed = _read_periods(periods_path) if periods_path.exists() else []
    if listed and listed[-1].key_id != current_id and any(p.key_id == current_id for p in listed):
        # The periods file names the new key but pseudonym.key was not replaced yet.
        newest = listed[-1].key_id
        new_master = load_pseudonym_key(hist / f"{newest}.key")
        write_key_file(paths.pseudonym_key, _hex_key(new_master), private=True, replace=True)
        return PseudonymRotation(current_id, newest, hist / f"{current_id}.key", resumed=True)
    keyring = load_pseudonym_keyring(keys_dir)  # everything else consistent
    taken = {p.key_id for p in keyring.periods}

    make_key_dir(hist)
    while True:
        new_master = _new_pseudonym_master()
        new_id = pseudonym_key_id(new_master)
        # A 4-hex id can collide: a period must be named by its id alone.
        if new_id not in taken and not (hist / f"{new_id}.key").exists():
            break
    archived = hist / f"{current_id}.key"
    _write_or_same(archived, _hex_key(master), private=True)
    write_key_file(hist / f"{new_id}.key", _hex_key(new_master), private=True)
    periods = listed or [_Period(current_id, "-", original=True)]
    periods.append(_Period(new_id, _rfc3339(_utc(now)), original=False))
    text = _PERIODS_HEADER + "".join(p.line() for p in periods)
    write_key_file(periods_path, text.encode("ascii"), private=True, replace=periods_path.exists())
    # Last: from here on new references use the new key.
    write_key_file(paths.pseudonym_key, _hex_key(new_master), private=True, replace=True)
    return PseudonymRotation(current_id, new_id, archived)


# --------------------------------------------------------------------------------------
# agent key pairs (agent side)


def archived_agent_key_path(current: Path, key_id: str) -> Path:
    """Where an earlier private key of the agent whose current key is ``current`` is kept."""
    return current.with_name(f"{current.stem}.{key_file_id(key_id)}.key")


def load_agent_private_keys(path: Path | str) -> list[AgentPrivateKey]:
    """The agent's current private key at ``path`` and, after it, every earlier one kept
    beside it as ``<name>.<file id>.key`` (each checked against the id in its name)."""
    current_path = Path(path)
    keys = [load_agent_private_key(current_path)]
    pattern = re.compile(re.escape(current_path.stem) + _AGENT_ARCHIVE)
    for p in sorted(current_path.parent.glob(f"{current_path.stem}.x25519-*.key")):
        if not pattern.fullmatch(p.name):
            continue
        key = load_agent_private_key(p)
        if p != archived_agent_key_path(current_path, key.key_id):
            raise errors.KeyFileError(
                f"{p} holds agent key {key.key_id}, not the key its name says; rename it to"
                f" {archived_agent_key_path(current_path, key.key_id).name}"
            )
        keys.append(key)
    return keys


@dataclass(frozen=True)
class AgentRotation:
    name: str
    old: AgentPublicKey
    new: AgentPublicKey
    archived: Path  # the old private key, kept to read the backlog
    paths: AgentKeyPaths  # the new pair
    gateway_public: Path | None  # the gateway's copy of the new public key, if written


def rotate_agent_key(
    name: str, agent_dir: Path | str, keys_dir: Path | str | None = None
) -> AgentRotation:
    """Give agent ``name`` a new key pair in ``agent_dir``, keeping the old private key as
    ``<name>.<old file id>.key`` so messages sealed to it still open. With ``keys_dir``
    the new public key also replaces the gateway's ``agents/<name>.pub``."""
    pair = agent_keypair_paths(agent_dir, name)
    if not pair.private.exists():
        raise errors.KeyFileError(
            f"{pair.private} not found: agent {name!r} has no key pair there to rotate;"
            f" create one with `gateway keys agent {name} --out {Path(agent_dir)}`"
        )
    old = load_agent_private_key(pair.private)
    archived = archived_agent_key_path(pair.private, old.key_id)
    # The old key is safe in its archive before anything is replaced.
    _write_or_same(archived, old.to_pem(), private=True)
    new = AgentPrivateKey.generate()
    write_key_file(pair.private, new.to_pem(), private=True, replace=True)
    write_key_file(pair.public, new.public_key().to_pem(), private=False, replace=True)
    gateway_public = None
    if keys_dir is not None:
        gateway_public = agent_key_paths(keys_dir, name).public
        make_key_dir(gateway_public.parent)
        write_key_file(gateway_public, new.public_key().to_pem(), private=False, replace=True)
    return AgentRotation(name, old.public_key(), new.public_key(), archived, pair, gateway_public)
