"""The key store on disk and `gateway keys`."""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway import errors, keys
from gateway.cli import main
from gateway.crypto import AgentPrivateKey, Opener, Sealer, SigningKey
from gateway.policy import Policy, load_policy
from gateway.runtime import build_core, ensure_demo_keys
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    # With umask 0 a create-then-chmod implementation would leave 0666 files behind.
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    keys.init_gateway_keys(d)
    return d


# --------------------------------------------------------------------------------------
# gateway keys


def test_init_creates_private_files_0600(tmp_path: Path, loose_umask: None) -> None:
    d = tmp_path / "keys"
    made = keys.init_gateway_keys(d)
    assert _mode(d / "gateway-signing.key") == 0o600
    assert _mode(d / "pseudonym.key") == 0o600
    assert _mode(d / "gateway-signing.pub") == 0o644
    assert made.paths.signing_key == d / "gateway-signing.key"
    sk = keys.load_signing_key(d / "gateway-signing.key")
    vk = keys.load_verify_key(d / "gateway-signing.pub")
    assert sk.public_key() == vk == made.verify_key
    vk.verify(sk.sign(b"x"), b"x")
    assert len(keys.load_pseudonym_key(d / "pseudonym.key")) == 32
    assert (d / "agents").is_dir()


def test_init_refuses_to_overwrite(keydir: Path) -> None:
    before = (keydir / "gateway-signing.key").read_bytes()
    with pytest.raises(errors.KeyFileError, match="--force"):
        keys.init_gateway_keys(keydir)
    assert (keydir / "gateway-signing.key").read_bytes() == before


def test_init_refuses_when_only_some_keys_exist(keydir: Path) -> None:
    (keydir / "gateway-signing.key").unlink()
    (keydir / "gateway-signing.pub").unlink()
    pseudonym = (keydir / "pseudonym.key").read_bytes()
    with pytest.raises(errors.KeyFileError, match=re.escape("pseudonym.key")):
        keys.init_gateway_keys(keydir)
    assert (keydir / "pseudonym.key").read_bytes() == pseudonym
    # Refused before writing anything, not halfway through.
    assert not (keydir / "gateway-signing.key").exists()
    assert not (keydir / "gateway-signing.pub").exists()


def test_init_force_replaces_atomically(keydir: Path, loose_umask: None) -> None:
    old = keys.load_verify_key(keydir / "gateway-signing.pub")
    old_pseudonym = keys.load_pseudonym_key(keydir / "pseudonym.key")
    made = keys.init_gateway_keys(keydir, force=True)
    assert made.verify_key != old
    assert keys.load_signing_key(keydir / "gateway-signing.key").public_key() == made.verify_key
    assert keys.load_pseudonym_key(keydir / "pseudonym.key") != old_pseudonym
    assert _mode(keydir / "gateway-signing.key") == 0o600
    assert _mode(keydir / "pseudonym.key") == 0o600
    assert not [p for p in keydir.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "name,loader",
    [
        ("gateway-signing.key", keys.load_signing_key),
        ("pseudonym.key", keys.load_pseudonym_key),
    ],
)
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_loading_a_readable_private_key_fails(
    keydir: Path, name: str, loader: object, mode: int
) -> None:
    path = keydir / name
    path.chmod(mode)
    with pytest.raises(errors.KeyFileError) as info:
        loader(path)  # type: ignore[operator]
    assert f"chmod 600 {path}" in str(info.value)
    path.chmod(0o600)
    loader(path)  # type: ignore[operator]


def test_missing_files_name_the_file_and_the_fix(tmp_path: Path) -> None:
    for loader, name in (
        (keys.load_signing_key, "gateway-signing.key"),
        (keys.load_verify_key, "gateway-signing.pub"),
        (keys.load_pseudonym_key, "pseudonym.key"),
    ):
        path = tmp_path / name
        with pytest.raises(errors.KeyFileError) as info:
            loader(path)
        assert str(path) in str(info.value)
        assert "gateway keys init" in str(info.value)
    with pytest.raises(errors.KeyFileError, match="gateway keys agent shipping"):
        keys.load_agent_private_key(tmp_path / "agents" / "shipping.key")


def test_corrupt_or_wrong_kind_files_fail(keydir: Path) -> None:
    sk_path = keydir / "gateway-signing.key"
    pub_path = keydir / "gateway-signing.pub"
    _, agent_paths = keys.create_agent_keypair(keydir, "shipping")

    # An agent's X25519 key where the gateway's Ed25519 key belongs.
    os.replace(agent_paths.private, sk_path)
    with pytest.raises(errors.KeyFileError, match=re.escape(str(sk_path))):
        keys.load_signing_key(sk_path)

    pub_path.write_bytes(b"garbage")
    with pytest.raises(errors.KeyFileError, match=re.escape(str(pub_path))):
        keys.load_verify_key(pub_path)

    # A public key where a private key belongs.
    fake = keydir / "agents" / "fake.key"
    fd = os.open(fake, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, agent_paths.public.read_bytes())
    os.close(fd)
    with pytest.raises(errors.KeyFileError, match=re.escape(str(fake))):
        keys.load_agent_private_key(fake)

    ps = keydir / "pseudonym.key"
    ps.write_text("abcd\n")
    with pytest.raises(errors.KeyFileError, match="32"):
        keys.load_pseudonym_key(ps)
    ps.write_text("zz" * 32)
    with pytest.raises(errors.KeyFileError, match=re.escape(str(ps))):
        keys.load_pseudonym_key(ps)


def test_password_protected_key_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    sk = SigningKey.generate()
    pem = sk._key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    path = tmp_path / "enc.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, pem)
    os.close(fd)
    with pytest.raises(errors.KeyFileError, match="password"):
        keys.load_signing_key(path)


# --------------------------------------------------------------------------------------
# agent keys


def test_create_agent_keypair(keydir: Path, loose_umask: None) -> None:
    public, paths = keys.create_agent_keypair(keydir, "shipping")
    assert paths.private == keydir / "agents" / "shipping.key"
    assert paths.public == keydir / "agents" / "shipping.pub"
    assert _mode(paths.private) == 0o600
    assert _mode(paths.public) == 0o644
    private = keys.load_agent_private_key(paths.private)
    assert private.public_key() == public
    assert keys.resolve_agent_public_key("agents/shipping.pub", keydir) == public

    # The pair on disk works end to end with the gateway key on disk.
    sk = keys.load_signing_key(keydir / "gateway-signing.key")
    vk = keys.load_verify_key(keydir / "gateway-signing.pub")
    msg = Sealer("shipping", public, sk).seal(b"{}", ref="e", disclosure_id="d").message
    assert Opener("shipping", private, vk).open(msg).plaintext == b"{}"

    paths.private.chmod(0o644)
    with pytest.raises(errors.KeyFileError, match="chmod 600"):
        keys.load_agent_private_key(paths.private)


def test_create_agent_keypair_refuses_overwrite_unless_forced(keydir: Path) -> None:
    first, paths = keys.create_agent_keypair(keydir, "shipping")
    with pytest.raises(errors.KeyFileError, match="already exists"):
        keys.create_agent_keypair(keydir, "shipping")
    assert keys.load_agent_private_key(paths.private).public_key() == first
    second, _ = keys.create_agent_keypair(keydir, "shipping", force=True)
    assert second != first
    assert keys.load_agent_private_key(paths.private).public_key() == second
    assert _mode(paths.private) == 0o600


def test_create_agent_keypair_at_explicit_paths(tmp_path: Path) -> None:
    paths = keys.AgentKeyPaths(private=tmp_path / "a" / "me.key", public=tmp_path / "b" / "me.pub")
    public, got = keys.create_agent_keypair(paths, "me")
    assert got == paths
    assert keys.load_agent_private_key(paths.private).public_key() == public


@pytest.mark.parametrize("name", ["../evil", "a/b", "", ".hidden", "x" * 65, "a..b", "sp ace"])
def test_agent_names_that_cannot_be_file_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(errors.KeyFileError):
        keys.create_agent_keypair(tmp_path, name)
    assert not (tmp_path / "evil.key").exists()


def test_resolve_agent_public_key(keydir: Path) -> None:
    public, paths = keys.create_agent_keypair(keydir, "email")
    assert keys.resolve_agent_public_key(public.to_text(), keydir) == public
    assert keys.resolve_agent_public_key(public.to_pem().decode(), keydir) == public
    assert keys.resolve_agent_public_key("agents/email.pub", keydir) == public
    assert keys.resolve_agent_public_key(str(paths.public), Path("/nonexistent")) == public
    text_file = keydir / "email.txt"
    text_file.write_text(public.to_text() + "\n")
    assert keys.resolve_agent_public_key("email.txt", keydir) == public

    with pytest.raises(errors.KeyFileError) as info:
        keys.resolve_agent_public_key("agents/nobody.pub", keydir)
    assert str(keydir / "agents" / "nobody.pub") in str(info.value)
    with pytest.raises(errors.KeyFileError, match="inline"):
        keys.resolve_agent_public_key("x25519:AAAA", keydir)
    with pytest.raises(errors.KeyFileError):
        keys.resolve_agent_public_key("  ", keydir)
    with pytest.raises(errors.KeyFileError, match=re.escape("gateway-signing.pub")):
        keys.resolve_agent_public_key("gateway-signing.pub", keydir)


# --------------------------------------------------------------------------------------
# CLI


def _secrets_in(d: Path, agent_dir: Path) -> list[str]:
    """Every form in which private material from ``d`` (the gateway's keys) and
    ``agent_dir`` (agents' own keys) could leak into output."""
    found: list[str] = []
    agent_keys = [*d.glob("agents/*.key"), *agent_dir.glob("*.key")]
    for path in [d / "gateway-signing.key", d / "pseudonym.key", *agent_keys]:
        text = path.read_text()
        found.append(text.strip())
        found += [line for line in text.splitlines() if line and not line.startswith("-----")]
    for path in agent_keys:
        raw = keys.load_agent_private_key(path).x25519.private_bytes_raw()
        found.append(base64.b64encode(raw).decode())
        found.append(raw.hex())
    sk = keys.load_signing_key(d / "gateway-signing.key")
    raw = sk._key.private_bytes_raw()
    found += [base64.b64encode(raw).decode(), raw.hex()]
    return found


def test_cli_creates_keys_and_prints_no_private_material(tmp_path: Path) -> None:
    d = tmp_path / "keys"
    runner = CliRunner()
    out = ""

    res = runner.invoke(main, ["keys", "init", "--dir", str(d)])
    assert res.exit_code == 0, res.output
    out += res.output
    vk = keys.load_verify_key(d / "gateway-signing.pub")
    assert vk.key_id in res.output and vk.fingerprint in res.output

    own = tmp_path / "agent-keys"
    res = runner.invoke(main, ["keys", "agent", "shipping", "--dir", str(d), "--out", str(own)])
    assert res.exit_code == 0, res.output
    out += res.output
    public = keys.load_agent_private_key(own / "shipping.key").public_key()
    assert f"public_key: {public.to_text()}" in res.output

    res = runner.invoke(main, ["keys", "show", "--dir", str(d)])
    assert res.exit_code == 0, res.output
    out += res.output
    assert public.to_text() in res.output and vk.key_id in res.output

    assert "PRIVATE KEY" not in out
    leaks = [s for s in _secrets_in(d, own) if s in out]
    assert leaks == []


def test_cli_init_twice_fails_cleanly(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["keys", "init", "--dir", str(tmp_path)]).exit_code == 0
    res = runner.invoke(main, ["keys", "init", "--dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "already exist" in res.output and "--force" in res.output
    assert "Traceback" not in res.output
    res = runner.invoke(main, ["keys", "agent", "../x", "--keys-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "cannot name a key file" in res.output
    res = runner.invoke(main, ["keys", "init", "--dir", str(tmp_path), "--force"])
    assert res.exit_code == 0, res.output


def test_cli_uses_settings_keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_KEYS_DIR", str(tmp_path / "from-env"))
    res = CliRunner().invoke(main, ["keys", "init"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "from-env" / "gateway-signing.key").exists()


def test_cli_show_reports_problems(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["keys", "show", "--dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "gateway keys init" in res.output

    assert runner.invoke(main, ["keys", "init", "--dir", str(tmp_path)]).exit_code == 0
    (tmp_path / "pseudonym.key").chmod(0o644)
    res = runner.invoke(main, ["keys", "show", "--dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "chmod 600" in res.output

    (tmp_path / "pseudonym.key").chmod(0o600)
    own = ["--out", str(tmp_path / "own")]
    assert (
        runner.invoke(main, ["keys", "agent", "email", "--dir", str(tmp_path), *own]).exit_code == 0
    )
    # A private key that does not belong to the public key beside it.
    other = AgentPrivateKey.generate().to_pem()
    keys.write_key_file(tmp_path / "agents" / "email.key", other, private=True)
    res = runner.invoke(main, ["keys", "show", "--dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "does not match" in res.output
    assert other.decode() not in res.output


# --------------------------------------------------------------------------------------
# key files and directories others could rewrite


@pytest.fixture
def started(tmp_path: Path) -> tuple[Settings, Policy]:
    """A keys directory as `ensure_demo_keys` leaves it, ready for `build_core`."""
    settings = Settings(
        policy_path=ROOT / "agents.yaml",
        keys_dir=tmp_path / "keys",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )
    policy = load_policy(settings.policy_path)
    ensure_demo_keys(settings, policy)
    build_core(settings, policy)  # starts as made
    return settings, policy


def test_world_writable_keys_dir_is_refused_at_start_up(started: tuple[Settings, Policy]) -> None:
    settings, policy = started
    settings.keys_dir.chmod(0o777)
    with pytest.raises(errors.KeyFileError) as info:
        build_core(settings, policy)
    assert str(settings.keys_dir) in str(info.value)
    assert f"chmod go-w {settings.keys_dir}" in str(info.value)


@pytest.mark.parametrize("mode", [0o666, 0o646, 0o664])
def test_writable_agent_public_key_is_refused_at_start_up(
    started: tuple[Settings, Policy], mode: int
) -> None:
    settings, policy = started
    pub = settings.keys_dir / "agents" / "shipping.pub"
    pub.chmod(mode)
    with pytest.raises(errors.KeyFileError) as info:
        build_core(settings, policy)
    assert "shipping" in str(info.value) and str(pub) in str(info.value)
    assert f"chmod go-w {pub}" in str(info.value)
    pub.chmod(0o644)
    build_core(settings, policy)


def test_writable_agents_dir_or_gateway_public_key_is_refused(
    started: tuple[Settings, Policy],
) -> None:
    settings, policy = started
    agents = settings.keys_dir / "agents"
    agents.chmod(0o770)
    with pytest.raises(errors.KeyFileError, match=re.escape(f"chmod go-w {agents}")):
        build_core(settings, policy)
    agents.chmod(0o700)
    settings.signing_public_key_path.chmod(0o666)
    with pytest.raises(
        errors.KeyFileError, match=re.escape(f"chmod go-w {settings.signing_public_key_path}")
    ):
        build_core(settings, policy)


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0,
    reason="giving a file to another user needs root (os.chown); run the tests as root to cover it",
)
def test_key_files_owned_by_another_user_are_refused(started: tuple[Settings, Policy]) -> None:
    settings, policy = started
    stranger = 54321
    for path in (
        settings.keys_dir / "agents" / "shipping.pub",
        settings.signing_public_key_path,
        settings.pseudonym_key_path,
        settings.keys_dir / "agents",
        settings.keys_dir,
    ):
        os.chown(path, stranger, -1)
        with pytest.raises(errors.KeyFileError) as info:
            build_core(settings, policy)
        assert f"{path} is owned by uid {stranger}" in str(info.value)
        assert f"chown root {path}" in str(info.value)
        os.chown(path, 0, -1)
    build_core(settings, policy)


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_root_owned_public_key_is_accepted(keydir: Path) -> None:
    # The current user or root: a root-managed /etc/gateway/keys is a normal set-up.
    keys.check_public_mode(keydir / "gateway-signing.pub")
    keys.check_key_dir(keydir)
