"""``gateway keys``: create and inspect the key store.

Only public material is ever printed: paths, fingerprints and agents' public keys. Key
errors propagate as :class:`~gateway.errors.KeyFileError`, which the ``gateway`` command
prints as one line with exit status 2; ``show`` exits 1 when it found problems.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import click

from gateway import errors
from gateway import keys as keystore
from gateway.crypto import AgentPublicKey

_DIR_OPTION = click.option(
    "--dir", "--keys-dir", "keys_dir", type=click.Path(file_okay=False, path_type=Path),
    default=None, help="Key directory [env GATEWAY_KEYS_DIR, default .gateway/keys].",
)


def _keys_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    # Imported late so `--help` works even when the environment holds invalid settings.
    from gateway.settings import Settings

    return Settings().keys_dir


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


@click.group("keys")
def keys() -> None:
    """Create and inspect the gateway's and agents' keys."""


@keys.command("init")
@_DIR_OPTION
@click.option("--force", is_flag=True,
              help="Replace existing keys (agents then need the new public key, and subject"
                   " refs change).")
def init_cmd(keys_dir: Path | None, force: bool) -> None:
    """Create the gateway signing key and the pseudonym key."""
    d = _keys_dir(keys_dir)
    # A KeyFileError propagates: the `gateway` command prints it as one line, status 2.
    made = keystore.init_gateway_keys(d, force=force)
    vk = made.verify_key
    click.echo(f"Gateway signing key   {made.paths.signing_key}  (private, mode 0600)")
    click.echo(f"Gateway public key    {made.paths.signing_pub}")
    click.echo(f"  key id              {vk.key_id}")
    click.echo(f"  fingerprint         SHA256:{vk.fingerprint}")
    click.echo(f"Pseudonym key         {made.paths.pseudonym_key}  (private, mode 0600)")
    click.echo("")
    click.echo(f"Give {made.paths.signing_pub} to every agent: it is what they verify"
               " messages with.")


@keys.command("agent")
@click.argument("name")
@_DIR_OPTION
@click.option("--force", is_flag=True, help="Replace this agent's existing key pair.")
def agent_cmd(name: str, keys_dir: Path | None, force: bool) -> None:
    """Create a key pair for agent NAME and print its public key for agents.yaml."""
    d = _keys_dir(keys_dir)
    public, paths = keystore.create_agent_keypair(d, name, force=force)
    click.echo(f"Agent {name} private key  {paths.private}  (private, mode 0600: hand it to"
               " the agent, it never belongs on the gateway)")
    click.echo(f"Agent {name} public key   {paths.public}")
    click.echo(f"  key id                  {public.key_id}")
    click.echo("")
    click.echo("Paste into agents.yaml under this agent:")
    click.echo(f"  public_key: {public.to_text()}")


@keys.command("show")
@_DIR_OPTION
def show_cmd(keys_dir: Path | None) -> None:
    """Show the key store: public keys, fingerprints and file modes only."""
    d = _keys_dir(keys_dir)
    paths = keystore.gateway_key_paths(d)
    problems = 0
    click.echo(f"Keys directory {d}")

    if paths.signing_pub.exists():
        try:
            vk = keystore.load_verify_key(paths.signing_pub)
            click.echo(f"Gateway public key    {paths.signing_pub}")
            click.echo(f"  key id              {vk.key_id}")
            click.echo(f"  fingerprint         SHA256:{vk.fingerprint}")
        except errors.KeyFileError as exc:
            vk = None
            problems += 1
            click.echo(f"Gateway public key    PROBLEM: {exc}")
    else:
        vk = None
        problems += 1
        click.echo(f"Gateway public key    missing ({paths.signing_pub}); run `gateway keys init`")

    if paths.signing_key.exists():
        try:
            sk = keystore.load_signing_key(paths.signing_key)
            if vk is not None and sk.public_key() != vk:
                problems += 1
                click.echo(f"Gateway signing key   PROBLEM: {paths.signing_key} does not match"
                           f" {paths.signing_pub}")
            else:
                click.echo(f"Gateway signing key   {paths.signing_key}  (mode"
                           f" {_mode(paths.signing_key)}, ok)")
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Gateway signing key   PROBLEM: {exc}")
    else:
        problems += 1
        click.echo(f"Gateway signing key   missing ({paths.signing_key}); run"
                   " `gateway keys init`")

    if paths.pseudonym_key.exists():
        try:
            keystore.load_pseudonym_key(paths.pseudonym_key)
            click.echo(f"Pseudonym key         {paths.pseudonym_key}  (mode"
                       f" {_mode(paths.pseudonym_key)}, ok)")
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Pseudonym key         PROBLEM: {exc}")
    else:
        problems += 1
        click.echo(f"Pseudonym key         missing ({paths.pseudonym_key}); run"
                   " `gateway keys init`")

    pubs = sorted(paths.agents_dir.glob("*.pub")) if paths.agents_dir.is_dir() else []
    click.echo(f"Agents ({len(pubs)})")
    for pub in pubs:
        try:
            apk: AgentPublicKey = keystore.load_agent_public_key(pub)
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"  {pub.stem:<16} PROBLEM: {exc}")
            continue
        private = pub.with_suffix(".key")
        where = "public key only"
        if private.exists():
            try:
                if keystore.load_agent_private_key(private).public_key() != apk:
                    problems += 1
                    where = f"PROBLEM: {private} does not match {pub}"
                else:
                    where = f"private key present, mode {_mode(private)}"
            except errors.KeyFileError as exc:
                problems += 1
                where = f"PROBLEM: {exc}"
        click.echo(f"  {pub.stem:<16} {apk.to_text()}  ({where})")
    if problems:
        click.echo(f"{problems} problem(s) in {d}", err=True)
        sys.exit(1)
