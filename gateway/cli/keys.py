"""``gateway keys``: create, rotate and inspect the key store.

Only public material is ever printed: paths, fingerprints and agents' public keys. Key
errors propagate as :class:`~gateway.errors.KeyFileError`, which the ``gateway`` command
prints as one line with exit status 2; ``show`` exits 1 when it found problems.
"""

from __future__ import annotations

import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import click
from pydantic import ValidationError

from gateway import errors, rotation
from gateway import keys as keystore
from gateway.cli.common import db_option, keys_dir_or_dir_option, settings_from
from gateway.crypto import AgentPublicKey
from gateway.ledger import access
from gateway.ledger.keyhistory import record_handover
from gateway.ledger.store import display_url


def _keys_dir(given: Path | None) -> Path:
    # The settings are read only without --dir, so that an invalid variable elsewhere in
    # the environment does not stop key management in a directory given explicitly.
    return given if given is not None else settings_from().keys_dir


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


@click.group("keys")
def keys() -> None:
    """Create, rotate and inspect the gateway's and agents' keys."""


@keys.command("init")
@keys_dir_or_dir_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace existing keys, breaking their history (agents need the new public key,"
    " subject refs change); `gateway keys rotate` replaces one key and keeps history usable.",
)
def init_cmd(keys_dir: Path | None, force: bool) -> None:
    """Create the gateway signing key, the pseudonym key and the workers' shared key."""
    d = _keys_dir(keys_dir)
    # A KeyFileError propagates: the `gateway` command prints it as one line, status 2.
    made = keystore.init_gateway_keys(d, force=force)
    worker = keystore.init_worker_key(d, force=force)
    vk = made.verify_key
    click.echo(f"Gateway signing key   {made.paths.signing_key}  (private, mode 0600)")
    click.echo(f"Gateway public key    {made.paths.signing_pub}")
    click.echo(f"  key id              {vk.key_id}")
    click.echo(f"  fingerprint         SHA256:{vk.fingerprint}")
    click.echo(f"Pseudonym key         {made.paths.pseudonym_key}  (private, mode 0600)")
    click.echo(f"Worker key            {worker}  (private, mode 0600)")
    click.echo("")
    click.echo(
        f"Give {made.paths.signing_pub} to every agent: it is what they verify messages with."
    )


_AGENT_OUT_DEFAULT = Path("agent-keys")

agent_out_option = click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=_AGENT_OUT_DEFAULT,
    show_default=True,
    help="The agent's own directory: its key pair goes here, never into the gateway's keys.",
)


@keys.command("agent")
@click.argument("name")
@agent_out_option
@keys_dir_or_dir_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace the gateway's copy of NAME's public key. An existing private key is never"
    " replaced: use `gateway keys rotate agent NAME`.",
)
def agent_cmd(name: str, out: Path, keys_dir: Path | None, force: bool) -> None:
    """Create a key pair for agent NAME: the pair in --out (the agent's), only the public
    key in the gateway's keys directory."""
    d = _keys_dir(keys_dir)
    made = keystore.issue_agent_keypair(name, out, d, replace_gateway_public=force)
    click.echo(
        f"Agent {name} private key  {made.pair.private}  (mode 0600: the agent's alone; hand"
        " it to the agent, it never belongs on the gateway)"
    )
    click.echo(f"Agent {name} public key   {made.pair.public}")
    click.echo(f"Gateway's copy            {made.gateway_public}  (public key only)")
    click.echo(f"  key id                  {made.public_key.key_id}")
    click.echo("")
    click.echo("agents.yaml refers to the gateway's copy, or paste under this agent:")
    click.echo(f"  public_key: {made.public_key.to_text()}")


@keys.group("rotate")
def rotate() -> None:
    """Replace one key, keeping what was made with the old one usable."""


def _echo_lines(*lines: str) -> None:
    for line in lines:
        click.echo(line)


@dataclass
class _LedgerRecorder:
    """Records a signing-key hand-over in the ledger (``--db`` or GATEWAY_LEDGER_URL) if
    one is there: a sink restarted with the new key can then append to what the old key
    sealed, and verifiers holding either key trust the other."""

    keys_dir: Path
    db: str | None
    recorded: str | None = None  # the ledger it was recorded in (password hidden)
    missed: str | None = None  # why it was not

    def __call__(self, note: str, note_path: Path) -> None:
        try:
            settings = settings_from(keys_dir=self.keys_dir, db=self.db)
        except ValidationError:
            self.missed = "the GATEWAY_* settings do not load"
            return
        try:
            store = access.open_ledger(settings)
        except errors.LedgerError as exc:
            self.missed = str(exc)
            return
        # Refused (another hand-over between these keys is recorded): the exception stops
        # the rotation before the new key takes over.
        with store:
            record_handover(store, note)
        self.recorded = display_url(settings.ledger_url)

    def command(self, note_path: Path) -> str:
        db = f" --db {display_url(self.db)}" if self.db else ""
        return f"gateway log record-handover {note_path}{db}"


@rotate.command("signing")
@keys_dir_or_dir_option
@db_option
def rotate_signing_cmd(keys_dir: Path | None, db: str | None) -> None:
    """New gateway signing key, handed over from the old one; the hand-over is recorded in
    the ledger before the new key is in place."""
    d = _keys_dir(keys_dir)
    ledger = _LedgerRecorder(d, db)
    done = rotation.rotate_signing_key(d, before_switch=ledger)
    pub = keystore.gateway_key_paths(d).signing_pub
    if done.resumed:
        click.echo("Finished a rotation that had been interrupted.")
    _echo_lines(
        f"Old signing key       {done.old.key_id}  (public key kept: {done.archived})",
        f"New signing key       {done.new.key_id}",
        f"  fingerprint         SHA256:{done.new.fingerprint}",
        f"  public key          {pub}",
        f"Hand-over             {done.handover_path}  (signed by the old and the new key)",
        f"  chain               {done.chain_path}  (every hand-over, for older keys)",
    )
    if ledger.recorded is not None:
        click.echo(f"Ledger                hand-over recorded in {ledger.recorded}")
    else:
        _echo_lines(
            f"Ledger                NOT recorded: {ledger.missed}",
            "  Record it before the ledger sink restarts with the new key (until then the",
            "  new key cannot append to what the old one sealed):",
            f"  {ledger.command(done.handover_path)}",
        )
    _echo_lines(
        "",
        "Restart the workers (one at a time is fine). Their messages carry the latest",
        "hand-overs, so agents that trust the old key accept the new one. Give agents and",
        f"auditors {pub}; an agent or auditor holding a key older than the last",
        f"GATEWAY_ENVELOPE_HANDOVERS ones needs {done.chain_path.name} (--handover).",
    )


@rotate.command("pseudonym")
@keys_dir_or_dir_option
def rotate_pseudonym_cmd(keys_dir: Path | None) -> None:
    """New pseudonym master key: a new linkability period."""
    d = _keys_dir(keys_dir)
    done = rotation.rotate_pseudonym_key(d)
    current = keystore.gateway_key_paths(d).pseudonym_key
    if done.resumed:
        click.echo("Finished a rotation that had been interrupted.")
    _echo_lines(
        f"Old pseudonym key     id {done.old_key_id}  (kept: {done.archived}, mode 0600)",
        f"New pseudonym key     id {done.new_key_id}  ({current})",
        "",
        f"Restart the workers: new subject refs then read subj_{done.new_key_id}_... and every",
        "agent gets new pseudonyms. Reports and erasure still find a subject's older refs.",
    )


@rotate.command("agent")
@click.argument("name")
@agent_out_option
@keys_dir_or_dir_option
@click.option(
    "--no-install",
    is_flag=True,
    help="Do not copy the new public key into the gateway's keys directory (an agent"
    " rotating on its own machine sends the public key instead).",
)
def rotate_agent_cmd(name: str, out: Path, keys_dir: Path | None, no_install: bool) -> None:
    """New key pair for agent NAME; the old private key is kept to read the backlog."""
    d = None if no_install else _keys_dir(keys_dir)
    done = rotation.rotate_agent_key(name, out, d)
    _echo_lines(
        f"Agent {name} new private key  {done.paths.private}  (mode 0600)",
        f"Agent {name} new public key   {done.paths.public}",
        f"  key id                     {done.new.key_id}",
        f"Old private key kept          {done.archived}  (opens messages sealed before)",
    )
    if done.gateway_public is not None:
        click.echo(f"Gateway's copy                {done.gateway_public}")
    _echo_lines(
        "",
        f"If agents.yaml gives {name}'s key inline, replace it with:",
        f"  public_key: {done.new.to_text()}",
        "Then restart the workers. The agent keeps reading with --key"
        f" {done.paths.private}: the old keys beside it open the backlog.",
    )


@keys.command("worker")
@keys_dir_or_dir_option
@click.option(
    "--force",
    is_flag=True,
    help="Replace the existing worker key (events decided again get new record ids).",
)
def worker_cmd(keys_dir: Path | None, force: bool) -> None:
    """Create the workers' shared key (worker.key), e.g. for keys made before it existed."""
    path = keystore.init_worker_key(_keys_dir(keys_dir), force=force)
    click.echo(f"Worker key            {path}  (private, mode 0600: every worker needs it)")


@keys.command("publisher")
@click.argument("name")
@keys_dir_or_dir_option
@click.option(
    "--hmac",
    "hmac_secret",
    is_flag=True,
    help="An HMAC-SHA256 secret shared with the publisher instead of an Ed25519 key pair.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("publisher-keys"),
    show_default=True,
    help="Where the publisher's signing half goes (hand it to the publisher).",
)
@click.option("--force", is_flag=True, help="Replace this publisher's existing keys.")
def publisher_cmd(
    name: str, keys_dir: Path | None, hmac_secret: bool, out: Path, force: bool
) -> None:
    """Create keys for publisher NAME: what the gateway verifies with goes to the keys
    directory, what the publisher signs with to --out."""
    d = _keys_dir(keys_dir)
    made = keystore.create_publisher_key(d, name, hmac_secret=hmac_secret, out_dir=out, force=force)
    if made.scheme == "ed25519":
        click.echo(f"Publisher {name} signing key  {made.publisher}  (private, mode 0600)")
        click.echo(f"Publisher {name} public key   {made.gateway}")
    else:
        click.echo(f"Publisher {name} secret       {made.publisher}  (private, mode 0600)")
        click.echo(f"Gateway's copy of the secret  {made.gateway}  (private, mode 0600)")
    rel = made.gateway.relative_to(d) if made.gateway.is_relative_to(d) else made.gateway
    field = "key" if made.scheme == "ed25519" else "secret"
    click.echo("")
    click.echo("Declare it in agents.yaml:")
    click.echo("  publishers:")
    click.echo(f"    {name}:")
    click.echo(f"      {field}: {rel}")
    click.echo("      events: [...]")
    click.echo(
        f"Hand {made.publisher} to the publisher (gateway publish --publisher {name}"
        f" --key {made.publisher}); it never belongs on the gateway."
    )


@keys.command("show")
@keys_dir_or_dir_option
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
                click.echo(
                    f"Gateway signing key   PROBLEM: {paths.signing_key} does not match"
                    f" {paths.signing_pub}"
                )
            else:
                click.echo(
                    f"Gateway signing key   {paths.signing_key}  (mode"
                    f" {_mode(paths.signing_key)}, ok)"
                )
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Gateway signing key   PROBLEM: {exc}")
    else:
        problems += 1
        click.echo(f"Gateway signing key   missing ({paths.signing_key}); run `gateway keys init`")

    if paths.pseudonym_key.exists():
        try:
            keystore.load_pseudonym_key(paths.pseudonym_key)
            click.echo(
                f"Pseudonym key         {paths.pseudonym_key}  (mode"
                f" {_mode(paths.pseudonym_key)}, ok)"
            )
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Pseudonym key         PROBLEM: {exc}")
    else:
        problems += 1
        click.echo(
            f"Pseudonym key         missing ({paths.pseudonym_key}); run `gateway keys init`"
        )

    if vk is not None:
        try:
            earlier = rotation.signing_key_history(d)
            chain = rotation.signing_handover_chain(d, vk)
            if earlier or chain:
                click.echo(
                    f"Signing key history   {len(earlier)} earlier key(s) kept, a chain of"
                    f" {len(chain)} hand-over(s) to the current key"
                )
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Signing key history   PROBLEM: {exc}")

    if paths.pseudonym_key.exists():
        try:
            ring = rotation.load_pseudonym_keyring(d)
            if len(ring.periods) > 1:
                names = [p.key_id + (" (original)" if p.original else "") for p in ring.periods]
                click.echo(f"Pseudonym periods     {', '.join(names)}  (current first)")
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Pseudonym periods     PROBLEM: {exc}")
    worker = keystore.worker_key_path(d)
    if worker.exists():
        try:
            keystore.load_worker_key(worker)
            click.echo(f"Worker key            {worker}  (mode {_mode(worker)}, ok)")
        except errors.KeyFileError as exc:
            problems += 1
            click.echo(f"Worker key            PROBLEM: {exc}")
    else:
        problems += 1
        click.echo(f"Worker key            missing ({worker}); run `gateway keys worker`")

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
                    where = (
                        f"WARNING: its private key {private} is on the gateway; it belongs to"
                        " the agent alone: move it to the agent's agent-keys/"
                    )
            except errors.KeyFileError as exc:
                problems += 1
                where = f"PROBLEM: {exc}"
        click.echo(f"  {pub.stem:<16} {apk.to_text()}  ({where})")
    if problems:
        click.echo(f"{problems} problem(s) in {d}", err=True)
        sys.exit(1)
