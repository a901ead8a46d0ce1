"""The key store on disk.

Layout under the keys directory (``settings.keys_dir``)::

    gateway-signing.key    Ed25519 private key, PKCS8 PEM, mode 0600
    gateway-signing.pub    its public key, PEM (give it to agents and log verifiers)
    pseudonym.key          32 random bytes as hex, mode 0600 (subject refs, pseudonym keys)
    agents/<name>.pub      an agent's X25519 public key, PEM
    worker.key             32 random bytes as hex, mode 0600 (the workers' shared secret)
    publishers/<name>.pub  a publisher's Ed25519 public key (what its signatures verify with)
    publishers/<name>.secret  or its HMAC-SHA256 secret, hex, mode 0600
    history/               earlier keys kept by `gateway keys rotate` (see gateway.rotation)

An agent's private key never belongs here: ``issue_agent_keypair`` writes the pair to the
agent's own directory (``./agent-keys`` by default; ``agent-keys`` beside the keys directory
for local demo runs) and only the public key into ``agents/``.

Every failure is a :class:`~gateway.errors.KeyFileError` naming the file and the fix.
Private files are created with mode 0600 from the start (never written then chmod-ed). On
load every key file and the directory holding it are checked: a private file must be mode
0600-or-stricter and owned by the current user; a public file or a key directory must not be
writable by group or others and must be owned by the current user or root (whoever can
rewrite a public key chooses who reads an agent's messages, or which gateway key is trusted).
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
    "DEMO_AGENT_KEYS",
    "PSEUDONYM_KEY",
    "PUBLISHERS_DIR",
    "SIGNING_KEY",
    "SIGNING_PUB",
    "WORKER_KEY",
    "AgentKeyPaths",
    "GatewayKeyPaths",
    "GatewayKeys",
    "IssuedAgentKeys",
    "PublisherKeyPaths",
    "agent_key_paths",
    "agent_keypair_paths",
    "check_key_dir",
    "check_private_mode",
    "check_public_mode",
    "create_agent_keypair",
    "create_publisher_key",
    "demo_agent_keys_dir",
    "demo_agent_private_key",
    "demo_publisher_keys_dir",
    "gateway_key_paths",
    "init_gateway_keys",
    "init_worker_key",
    "issue_agent_keypair",
    "load_agent_private_key",
    "load_agent_public_key",
    "load_pseudonym_key",
    "load_publisher_public_key",
    "load_publisher_secret",
    "load_publisher_signing_key",
    "load_signing_key",
    "load_verify_key",
    "load_worker_key",
    "make_key_dir",
    "read_public_file",
    "resolve_agent_public_key",
    "resolve_publisher_path",
    "validate_agent_name",
    "worker_key_path",
    "write_key_file",
]

SIGNING_KEY: Final = "gateway-signing.key"
SIGNING_PUB: Final = "gateway-signing.pub"
PSEUDONYM_KEY: Final = "pseudonym.key"
AGENTS_DIR: Final = "agents"
DEMO_AGENT_KEYS: Final = "agent-keys"

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


def write_key_file(path: Path, data: bytes, *, private: bool, replace: bool = False) -> None:
    """Write one key file: mode 0600 (private) or 0644 (public) from creation on. Without
    ``replace`` the file must not exist; with it an existing file is replaced atomically."""
    _write_new(path, data, _PRIVATE_MODE if private else _PUBLIC_MODE, replace)


def make_key_dir(path: Path) -> None:
    """Create a key directory (mode 0700) and its parents if missing."""
    _make_dir(path)


def init_gateway_keys(keys_dir: Path | str, force: bool = False) -> GatewayKeys:
    """Create the gateway signing key pair and the pseudonym key.

    Refuses if any of them exists unless ``force``: replacing the signing key means agents
    need the new public key, and replacing the pseudonym key changes every subject ref.
    """
    paths = gateway_key_paths(keys_dir)
    if not force:
        existing = [
            p for p in (paths.signing_key, paths.signing_pub, paths.pseudonym_key) if p.exists()
        ]
        if existing:
            names = ", ".join(str(p) for p in existing)
            raise errors.KeyFileError(
                f"gateway keys already exist ({names}); refusing to overwrite them. To"
                " replace one key and keep what it made usable, run `gateway keys rotate"
                " signing` or `gateway keys rotate pseudonym`; --force replaces both and"
                " breaks that history (agents need the new public key, subject refs change)"
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


def agent_keypair_paths(agent_dir: Path | str, name: str) -> AgentKeyPaths:
    """An agent's own key pair in its own directory: ``<name>.key`` and ``<name>.pub``."""
    validate_agent_name(name)
    d = Path(agent_dir)
    return AgentKeyPaths(private=d / f"{name}.key", public=d / f"{name}.pub")


def demo_agent_keys_dir(keys_dir: Path | str) -> Path:
    """Where local runs (the demo, tests) keep demo agents' key pairs: ``agent-keys``
    beside the gateway's keys directory, never inside it."""
    return Path(keys_dir).parent / DEMO_AGENT_KEYS


def demo_agent_private_key(keys_dir: Path | str, name: str) -> Path:
    """A demo agent's private key: ``<name>.key`` in :func:`demo_agent_keys_dir`."""
    return agent_keypair_paths(demo_agent_keys_dir(keys_dir), name).private


@dataclass(frozen=True)
class IssuedAgentKeys:
    """What ``issue_agent_keypair`` wrote: the agent's pair and the gateway's public copy."""

    public_key: AgentPublicKey
    pair: AgentKeyPaths
    gateway_public: Path


def issue_agent_keypair(
    name: str,
    agent_dir: Path | str,
    keys_dir: Path | str,
    *,
    replace_gateway_public: bool = False,
) -> IssuedAgentKeys:
    """Create agent ``name``'s key pair in ``agent_dir`` (the agent's side) and put only its
    public key into the gateway's ``keys_dir/agents/<name>.pub``.

    An existing private key is never overwritten (its messages would become unreadable):
    that is what ``gateway keys rotate agent`` is for. ``replace_gateway_public`` allows
    replacing the gateway's copy of the public key.
    """
    pair = agent_keypair_paths(agent_dir, name)
    gateway_public = agent_key_paths(keys_dir, name).public
    if pair.private.exists():
        raise errors.KeyFileError(
            f"{pair.private} already exists: agent {name!r} has a key pair, and replacing"
            " its private key would make every message sealed to it unreadable. To give it"
            f" a new pair and keep the old key, run `gateway keys rotate agent {name}"
            f" --out {Path(agent_dir)}`"
        )
    if gateway_public.exists() and not replace_gateway_public:
        raise errors.KeyFileError(
            f"{gateway_public} already exists; refusing to overwrite agent {name!r}'s public"
            " key (use --force to replace the gateway's copy)"
        )
    public, _ = create_agent_keypair(pair, name, force=pair.public.exists())
    _make_dir(gateway_public.parent)
    _write_new(gateway_public, public.to_pem(), _PUBLIC_MODE, gateway_public.exists())
    return IssuedAgentKeys(public, pair, gateway_public)


# --------------------------------------------------------------------------------------
# reading


def _whoami() -> str:
    """The effective user's name for a `chown` hint (its uid when it has no name)."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except OSError as exc:
        raise errors.KeyFileError(f"cannot stat {path}: {exc.strerror}") from exc


def _check_owner(path: Path, st: os.stat_result, root_ok: bool) -> None:
    # Whoever owns a key file (or the directory holding it) can replace the key: a swapped
    # agent public key hands that agent's messages to whoever made the swap.
    me = os.geteuid()
    if st.st_uid == me or (root_ok and st.st_uid == 0):
        return
    allowed = "you" + (" or root" if root_ok else "")
    raise errors.KeyFileError(
        f"{path} is owned by uid {st.st_uid}, not by {allowed} (uid {me}): that account"
        f" could replace the key; fix with `chown {_whoami()} {path}`"
    )


def check_private_mode(path: Path) -> None:
    """Refuse a private key file that group or others can read or write, or that another
    user owns."""
    if os.name != "posix":
        return
    st = _stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise errors.KeyFileError(
            f"{path} is a private key but has mode {mode:04o} (readable or writable by"
            f" others); restrict it with `chmod 600 {path}`"
        )
    _check_owner(path, st, root_ok=False)


def check_public_mode(path: Path) -> None:
    """Refuse a public key file that group or others can write, or that a user other than
    the current one or root owns: whoever can rewrite a public key decides who can read
    (agent keys) or what is trusted (the gateway's key)."""
    if os.name != "posix":
        return
    st = _stat(path)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise errors.KeyFileError(
            f"{path} is a public key but has mode {mode:04o} (writable by others, who could"
            f" swap the key); restrict it with `chmod go-w {path}`"
        )
    _check_owner(path, st, root_ok=True)


def check_key_dir(path: Path) -> None:
    """Refuse a directory holding keys that group or others can write (they could replace
    any key in it by renaming), or that a user other than the current one or root owns."""
    if os.name != "posix":
        return
    st = _stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise errors.KeyFileError(f"{path} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise errors.KeyFileError(
            f"key directory {path} has mode {mode:04o} (writable by others, who could"
            f" replace the keys in it); restrict it with `chmod go-w {path}`"
        )
    _check_owner(path, st, root_ok=True)


def _read(path: Path | str, what: str, hint: str, private: bool) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.exists():
        raise errors.KeyFileError(f"{what} {p} not found; {hint}")
    if not p.is_file():
        raise errors.KeyFileError(f"{what} {p} is not a regular file")
    # The directory first: a key in a directory others can write is not under our control
    # whatever the file's own mode says.
    check_key_dir(p.absolute().parent)
    if private:
        check_private_mode(p)
    else:
        check_public_mode(p)
    try:
        return p, p.read_bytes()
    except OSError as exc:
        raise errors.KeyFileError(f"cannot read {what} {p}: {exc.strerror}") from exc


def read_public_file(path: Path | str, what: str, hint: str) -> bytes:
    """The bytes of a public key-store file (e.g. a hand-over note), checked like a public
    key: not writable by others, owned by the current user or root."""
    return _read(path, what, hint, private=False)[1]


def load_signing_key(path: Path | str) -> SigningKey:
    p, data = _read(path, "gateway signing key", _INIT_HINT, private=True)
    try:
        return SigningKey.from_pem(data)
    except errors.KeyFileError as exc:
        raise errors.KeyFileError(
            f"{p}: {exc}; recreate it with `gateway keys init --force`"
        ) from exc


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
    p, data = _read(
        p, "agent private key", f"create it with `gateway keys agent {p.stem}`", private=True
    )
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
    p, data = _read(
        path,
        "agent public key",
        "create it with `gateway keys agent NAME` or give the agent's key inline as 'x25519:...'",
        private=False,
    )
    try:
        return AgentPublicKey.parse(data)
    except (errors.KeyFileError, UnicodeDecodeError) as exc:
        raise errors.KeyFileError(f"{p}: not an X25519 public key ({exc})") from exc


# --------------------------------------------------------------------------------------
# the workers' shared secret

WORKER_KEY: Final = "worker.key"
PUBLISHERS_DIR: Final = "publishers"
_WORKER_KEY_BYTES: Final = 32
# HMAC-SHA256 publisher secrets: at least the hash's own size.
_MIN_SECRET_BYTES: Final = 32


def worker_key_path(keys_dir: Path | str) -> Path:
    """Where the workers' shared secret lives: ``worker.key`` in the keys directory."""
    return Path(keys_dir) / WORKER_KEY


def init_worker_key(keys_dir: Path | str, force: bool = False) -> Path:
    """Create ``worker.key``: 32 random bytes as hex, mode 0600. The workers' shared secret
    (record ids, record and changelog authentication); refuses to replace one unless
    ``force`` (record ids of re-decided events would then change)."""
    path = worker_key_path(keys_dir)
    _make_dir(path.parent)
    if path.exists() and not force:
        raise errors.KeyFileError(
            f"{path} already exists; refusing to overwrite it (use --force to replace it;"
            " events decided again afterwards get new record ids)"
        )
    secret = secrets.token_bytes(_WORKER_KEY_BYTES).hex() + "\n"
    _write_new(path, secret.encode("ascii"), _PRIVATE_MODE, force)
    return path


def _load_hex_secret(path: Path | str, what: str, hint: str, min_bytes: int) -> bytes:
    p, data = _read(path, what, hint, private=True)
    try:
        key = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.KeyFileError(f"{p}: the {what} must be hex text") from exc
    if len(key) < min_bytes:
        raise errors.KeyFileError(
            f"{p}: the {what} holds {len(key)} bytes, at least {min_bytes} are needed"
        )
    return key


def load_worker_key(path: Path | str) -> bytes:
    """The workers' shared secret (``worker.key``: 64 hex characters, mode 0600)."""
    key = _load_hex_secret(
        path, "worker key", "create it with `gateway keys worker`", _WORKER_KEY_BYTES
    )
    if len(key) != _WORKER_KEY_BYTES:
        raise errors.KeyFileError(
            f"{path}: the worker key holds {len(key)} bytes, expected {_WORKER_KEY_BYTES}"
        )
    return key


# --------------------------------------------------------------------------------------
# publisher keys


@dataclass(frozen=True)
class PublisherKeyPaths:
    """Where a publisher's keys went: ``gateway`` is what the gateway verifies with (an
    Ed25519 public key, or the HMAC secret); ``publisher`` is the publisher's signing half
    (its Ed25519 private key, or its copy of the secret)."""

    gateway: Path
    publisher: Path
    scheme: str  # "ed25519" or "hmac-sha256"


def demo_publisher_keys_dir(keys_dir: Path | str) -> Path:
    """Where local runs keep demo publishers' signing keys: beside the keys directory, never
    in it (the gateway holds only what verifies a publisher)."""
    return Path(keys_dir).parent / "publisher-keys"


def create_publisher_key(
    keys_dir: Path | str,
    name: str,
    *,
    hmac_secret: bool = False,
    gateway_path: Path | str | None = None,
    out_dir: Path | str | None = None,
    force: bool = False,
) -> PublisherKeyPaths:
    """Create publisher ``name``'s keys.

    Ed25519 (default): the private key goes to ``out_dir/<name>.key`` (0600, the
    publisher's), the public key to ``gateway_path`` (default ``publishers/<name>.pub`` in
    the keys directory). HMAC-SHA256 (``hmac_secret``): one 32-byte secret as hex, written
    to ``gateway_path`` (default ``publishers/<name>.secret``) and to
    ``out_dir/<name>.secret``, both 0600. A relative ``gateway_path`` is taken against the
    keys directory; ``out_dir`` defaults to :func:`demo_publisher_keys_dir`.
    """
    validate_agent_name(name)
    suffix = ".secret" if hmac_secret else ".pub"
    target = (
        Path(gateway_path) if gateway_path is not None else Path(PUBLISHERS_DIR) / (name + suffix)
    )
    if not target.is_absolute():
        target = Path(keys_dir) / target
    out = Path(out_dir) if out_dir is not None else demo_publisher_keys_dir(keys_dir)
    own = out / (name + (".secret" if hmac_secret else ".key"))
    if target.resolve().parent == own.resolve().parent:
        raise errors.KeyFileError(
            f"publisher {name!r}: its signing key would go into the gateway's key directory"
            f" {target.parent}; give the publisher's copy another directory (--out)"
        )
    if not force:
        for p in (target, own):
            if p.exists():
                raise errors.KeyFileError(
                    f"{p} already exists; refusing to overwrite publisher {name!r}'s keys"
                    " (use --force to replace them; the publisher then needs the new key)"
                )
    _make_dir(target.parent)
    _make_dir(own.parent)
    if hmac_secret:
        secret = (secrets.token_bytes(_MIN_SECRET_BYTES).hex() + "\n").encode("ascii")
        _write_new(own, secret, _PRIVATE_MODE, force)
        _write_new(target, secret, _PRIVATE_MODE, force)
        return PublisherKeyPaths(gateway=target, publisher=own, scheme="hmac-sha256")
    private = SigningKey.generate()
    _write_new(own, private.to_pem(), _PRIVATE_MODE, force)
    _write_new(target, private.public_key().to_pem(), _PUBLIC_MODE, force)
    return PublisherKeyPaths(gateway=target, publisher=own, scheme="ed25519")


def resolve_publisher_path(ref: str, keys_dir: Path | str) -> Path:
    """A key path from the policy's ``publishers`` section: relative paths are taken
    against the keys directory."""
    p = Path(ref.strip()).expanduser()
    return p if p.is_absolute() else Path(keys_dir) / p


def load_publisher_public_key(ref: str, keys_dir: Path | str) -> VerifyKey:
    """A publisher's Ed25519 public key: inline ``ed25519:<base64>``, or a PEM /
    ``ed25519:`` text file (a relative path is taken against the keys directory)."""
    text = ref.strip()
    if text.startswith(VerifyKey.TEXT_PREFIX):
        try:
            return VerifyKey.parse(text)
        except errors.KeyFileError as exc:
            raise errors.KeyFileError(
                f"inline publisher key: {exc}; give 'ed25519:<base64 of the 32-byte public key>'"
            ) from exc
    if not text:
        raise errors.KeyFileError("empty publisher key; give 'ed25519:...' or a .pub path")
    p, data = _read(
        resolve_publisher_path(text, keys_dir),
        "publisher public key",
        "create it with `gateway keys publisher NAME`",
        private=False,
    )
    try:
        return VerifyKey.parse(data)
    except (errors.KeyFileError, UnicodeDecodeError) as exc:
        raise errors.KeyFileError(f"{p}: not an Ed25519 public key ({exc})") from exc


def load_publisher_secret(path: Path | str) -> bytes:
    """An HMAC-SHA256 publisher secret: hex text of at least 32 bytes, mode 0600."""
    return _load_hex_secret(
        path,
        "publisher secret",
        "create it with `gateway keys publisher NAME --hmac`",
        _MIN_SECRET_BYTES,
    )


def load_publisher_signing_key(path: Path | str) -> SigningKey:
    """A publisher's Ed25519 private key (PKCS8 PEM, mode 0600)."""
    p, data = _read(
        path,
        "publisher signing key",
        "create it with `gateway keys publisher NAME`",
        private=True,
    )
    try:
        return SigningKey.from_pem(data)
    except errors.KeyFileError as exc:
        raise errors.KeyFileError(f"{p}: {exc}") from exc
