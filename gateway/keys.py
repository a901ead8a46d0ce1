"""The key store on disk.

Layout under the keys directory (``settings.keys_dir``)::

    gateway-signing.key    Ed25519 private key, PKCS8 PEM, mode 0600
    gateway-signing.pub    its public key, PEM (give it to agents and log verifiers)
    pseudonym.key          32 random bytes as hex, mode 0600 (subject refs, pseudonym keys)
    agents/<name>.key      an agent's X25519 private key (demo / agent side), mode 0600
    agents/<name>.pub      its public key, PEM

Every failure is a :class:`~gateway.errors.KeyFileError` naming the file and the fix.
Private files are created with mode 0600 from the start (never written then chmod-ed), and
private files readable by group or others are refused on load.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway import errors
from gateway.crypto import AgentPrivateKey, AgentPublicKey, SigningKey, VerifyKey

__all__ = [
    "AGENTS_DIR",
    "PSEUDONYM_KEY",
    "SIGNING_KEY",
    "SIGNING_PUB",
    "AgentKeyPaths",
    "GatewayKeyPaths",
    "GatewayKeys",
    "agent_key_paths",
    "check_private_mode",
    "create_agent_keypair",
    "gateway_key_paths",
    "init_gateway_keys",
    "load_agent_private_key",
    "load_agent_public_key",
    "load_pseudonym_key",
    "load_signing_key",
    "load_verify_key",
    "resolve_agent_public_key",
    "validate_agent_name",
]

SIGNING_KEY: Final = "gateway-signing.key"
SIGNING_PUB: Final = "gateway-signing.pub"
PSEUDONYM_KEY: Final = "pseudonym.key"
AGENTS_DIR: Final = "agents"

_PRIVATE_MODE: Final = 0o600
_PUBLIC_MODE: Final = 0o644
_PSEUDONYM_BYTES: Final = 32
_INIT_HINT: Final = "run `gateway keys init`"
# Agent names become file names: keep them to a portable, traversal-free alphabet.
_AGENT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class GatewayKeyPaths:
    dir: Path
    signing_key: Path
    signing_pub: Path
    pseudonym_key: Path
    agents_dir: Path


@dataclass(frozen=True)
class AgentKeyPaths:
    private: Path
    public: Path


@dataclass(frozen=True)
class GatewayKeys:
    """What ``init_gateway_keys`` made: paths and public facts only."""

    paths: GatewayKeyPaths
    verify_key: VerifyKey


def gateway_key_paths(keys_dir: Path | str) -> GatewayKeyPaths:
    d = Path(keys_dir)
    return GatewayKeyPaths(
        dir=d,
        signing_key=d / SIGNING_KEY,
        signing_pub=d / SIGNING_PUB,
        pseudonym_key=d / PSEUDONYM_KEY,
        agents_dir=d / AGENTS_DIR,
    )


def validate_agent_name(name: str) -> str:
    if not _AGENT_NAME.fullmatch(name) or ".." in name:
        raise errors.KeyFileError(
            f"agent name {name!r} cannot name a key file: use letters, digits, '_', '-', '.'"
            " (at most 64 characters, starting with a letter or digit)"
        )
    return name


def agent_key_paths(keys_dir: Path | str, name: str) -> AgentKeyPaths:
    validate_agent_name(name)
    agents = Path(keys_dir) / AGENTS_DIR
    return AgentKeyPaths(private=agents / f"{name}.key", public=agents / f"{name}.pub")


# --------------------------------------------------------------------------------------
# writing


def _fsync_dir(path: Path) -> None:
    # Makes the new directory entry durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Create ``path`` holding ``data`` with ``mode`` set at creation.

    Without ``force`` the file must not exist (O_EXCL makes that check race-free). With
    ``force`` the data goes to a fresh temporary file that atomically replaces the old one,
    so a reader never sees a half-written key.
    """
    target = path
    if force:
        target = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise errors.KeyFileError(
            f"{path} already exists; refusing to overwrite it (use --force to replace it)"
        ) from exc
    except OSError as exc:
        raise errors.KeyFileError(f"cannot create {path}: {exc.strerror}") from exc
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if force:
                os.replace(target, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
    except OSError as exc:
        raise errors.KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    _fsync_dir(path.parent)


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.KeyFileError(f"cannot create key directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise errors.KeyFileError(f"{path} is not a directory")


def init_gateway_keys(keys_dir: Path | str, force: bool = False) -> GatewayKeys:
    """Create the gateway signing key pair and the pseudonym key.

    Refuses if any of them exists unless ``force``: replacing the signing key means agents
    need the new public key, and replacing the pseudonym key changes every subject ref.
    """
    paths = gateway_key_paths(keys_dir)
    if not force:
        existing = [p for p in (paths.signing_key, paths.signing_pub, paths.pseudonym_key)
                    if p.exists()]
        if existing:
            names = ", ".join(str(p) for p in existing)
            raise errors.KeyFileError(
                f"gateway keys already exist ({names}); refusing to overwrite them. Use"
                " --force to replace them (agents then need the new public key, and subject"
                " refs in the disclosure log change)"
            )
    _make_dir(paths.dir)
    _make_dir(paths.agents_dir)
    signing = SigningKey.generate()
    # Private key first: a crash before the .pub is written leaves a state that `init`
    # reports as existing, never a public key without its private half.
    _write_new(paths.signing_key, signing.to_pem(), _PRIVATE_MODE, force)
    _write_new(paths.signing_pub, signing.public_key().to_pem(), _PUBLIC_MODE, force)
    pseudonym_hex = secrets.token_bytes(_PSEUDONYM_BYTES).hex() + "\n"
    _write_new(paths.pseudonym_key, pseudonym_hex.encode("ascii"), _PRIVATE_MODE, force)
    return GatewayKeys(paths=paths, verify_key=signing.public_key())


def create_agent_keypair(
    dir_or_paths: Path | str | AgentKeyPaths,
    name: str,
    force: bool = False,
) -> tuple[AgentPublicKey, AgentKeyPaths]:
    """Create an agent's X25519 key pair as ``agents/<name>.key`` and ``.pub``.

    ``dir_or_paths`` is the keys directory, or explicit :class:`AgentKeyPaths`.
    """
    validate_agent_name(name)
    if isinstance(dir_or_paths, AgentKeyPaths):
        paths = dir_or_paths
    else:
        paths = agent_key_paths(dir_or_paths, name)
    if not force:
        for p in (paths.private, paths.public):
            if p.exists():
                raise errors.KeyFileError(
                    f"{p} already exists; refusing to overwrite agent {name!r}'s keys"
                    " (use --force to replace them, then update its public key in agents.yaml)"
                )
    _make_dir(paths.private.parent)
    _make_dir(paths.public.parent)
    private = AgentPrivateKey.generate()
    _write_new(paths.private, private.to_pem(), _PRIVATE_MODE, force)
    _write_new(paths.public, private.public_key().to_pem(), _PUBLIC_MODE, force)
    return private.public_key(), paths


# --------------------------------------------------------------------------------------
# reading


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others can read or write."""
    if os.name != "posix":
        return
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise errors.KeyFileError(f"cannot stat {path}: {exc.strerror}") from exc
    if mode & 0o077:
        raise errors.KeyFileError(
            f"{path} is a private key but has mode {mode:04o} (readable or writable by"
            f" others); restrict it with `chmod 600 {path}`"
        )


def _read(path: Path | str, what: str, hint: str, private: bool) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.exists():
        raise errors.KeyFileError(f"{what} {p} not found; {hint}")
    if not p.is_file():
        raise errors.KeyFileError(f"{what} {p} is not a regular file")
    if private:
        check_private_mode(p)
    try:
        return p, p.read_bytes()
    except OSError as exc:
        raise errors.KeyFileError(f"cannot read {what} {p}: {exc.strerror}") from exc


def load_signing_key(path: Path | str) -> SigningKey:
    p, data = _read(path, "gateway signing key", _INIT_HINT, private=True)
    try:
        return SigningKey.from_pem(data)
    except errors.KeyFileError as exc:
        raise errors.KeyFileError(f"{p}: {exc}; recreate it with `gateway keys init --force`") \
            from exc


def load_verify_key(path: Path | str) -> VerifyKey:
    p, data = _read(path, "gateway public signing key", _INIT_HINT, private=False)
    try:
        return VerifyKey.parse(data)
    except (errors.KeyFileError, UnicodeDecodeError) as exc:
        raise errors.KeyFileError(
            f"{p}: not the gateway's Ed25519 public key ({exc}); copy {SIGNING_PUB} from the"
            " gateway's keys directory"
        ) from exc


def load_pseudonym_key(path: Path | str) -> bytes:
    p, data = _read(path, "pseudonym key", _INIT_HINT, private=True)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.KeyFileError(
            f"{p}: the pseudonym key must be {_PSEUDONYM_BYTES * 2} hex characters"
        ) from exc
    if len(key) != _PSEUDONYM_BYTES:
        raise errors.KeyFileError(
            f"{p}: the pseudonym key holds {len(key)} bytes, expected {_PSEUDONYM_BYTES}"
        )
    return key


def load_agent_private_key(path: Path | str) -> AgentPrivateKey:
    p = Path(path)
    p, data = _read(p, "agent private key", f"create it with `gateway keys agent {p.stem}`",
                    private=True)
    try:
        return AgentPrivateKey.from_pem(data)
    except errors.KeyFileError as exc:
        raise errors.KeyFileError(f"{p}: {exc}") from exc


def resolve_agent_public_key(ref: str, keys_dir: Path | str) -> AgentPublicKey:
    """An agent's public key from agents.yaml: inline ``x25519:...`` / PEM text, or a path
    (relative paths are taken against the keys directory)."""
    text = ref.strip()
    if text.startswith(AgentPublicKey.TEXT_PREFIX) or text.startswith("-----BEGIN"):
        try:
            return AgentPublicKey.parse(text)
        except errors.KeyFileError as exc:
            raise errors.KeyFileError(
                f"inline agent public key: {exc}; paste the text printed by"
                " `gateway keys agent NAME`"
            ) from exc
    if not text:
        raise errors.KeyFileError(
            "empty agent public key; give 'x25519:...' or a path to a .pub file"
        )
    p = Path(text).expanduser()
    if not p.is_absolute():
        p = Path(keys_dir) / p
    return load_agent_public_key(p)


def load_agent_public_key(path: Path | str) -> AgentPublicKey:
    """An agent public key file: PEM or the ``x25519:...`` text form."""
    p, data = _read(path, "agent public key", "create it with `gateway keys agent NAME` or"
                    " give the agent's key inline as 'x25519:...'", private=False)
    try:
        return AgentPublicKey.parse(data)
    except (errors.KeyFileError, UnicodeDecodeError) as exc:
        raise errors.KeyFileError(f"{p}: not an X25519 public key ({exc})") from exc
