"""``gateway agent read``: the agent side — verify, decrypt, print JSON lines."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson
from rich.markup import escape

from gateway.cli.common import (
    bootstrap_option,
    err_console,
    keys_dir_option,
    require_broker,
    settings_from,
)
from gateway.errors import KeyFileError, SignatureError
from gateway.keys import agent_keypair_paths, demo_agent_keys_dir
from gateway.sdk.reader import AgentReader, Received, Rejected, messages_in_file
from gateway.signed_notes import split_handovers

_KEY_HELP = (
    "Your private key; earlier keys kept beside it (NAME.<key id>.key) are used too"
    " [default agent-keys/NAME.key, else the demo's KEYS_DIR/../agent-keys/NAME.key]."
)
_GATEWAY_KEY_HELP = (
    "A gateway public signing key you trust; repeat for several. Messages signed by a"
    " newer key are accepted through the hand-over they carry"
    " [default KEYS_DIR/gateway-signing.pub]."
)
_HANDOVER_HELP = (
    "A file of gateway key hand-overs to follow from your --gateway-key (the gateway's"
    " history/signing/handover-chain): needed when your key is older than the last few"
    " hand-overs the messages carry. Repeatable."
)

handover_option = click.option(
    "--handover",
    "handovers",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=_HANDOVER_HELP,
)


def _read_handovers(paths: tuple[Path, ...]) -> list[str]:
    notes: list[str] = []
    for p in paths:
        try:
            notes += split_handovers(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SignatureError) as exc:
            raise KeyFileError(f"{p}: not a hand-over chain ({exc})") from exc
    return notes


@click.group()
def agent() -> None:
    """What an agent runs to read its messages."""


def _default_key(keys_dir: Path, name: str) -> Path:
    # Where `gateway keys agent` writes by default, then where the demo keeps its agents.
    own = agent_keypair_paths(Path("agent-keys"), name).private
    return own if own.exists() else agent_keypair_paths(demo_agent_keys_dir(keys_dir), name).private


def _reader(
    name: str,
    key: Path | None,
    gateway_keys: tuple[Path, ...],
    keys_dir: Path | None,
    handovers: tuple[Path, ...] = (),
) -> AgentReader:
    s = settings_from(keys_dir=keys_dir)
    try:
        return AgentReader(
            name,
            key or _default_key(s.keys_dir, name),
            list(gateway_keys) or [s.signing_public_key_path],
            handovers=_read_handovers(handovers),
        )
    except SignatureError as exc:
        raise KeyFileError(f"a --handover file does not check: {exc}") from exc


def _report_handovers(reader: AgentReader) -> None:
    for h in reader.learned_gateway_keys:
        err_console.print(
            f"trusted gateway key {h.new.key_id} (handed over by {h.old.key_id} at"
            f" {h.time}); to trust it directly, save this line to a file and pass it with"
            f" --gateway-key: {h.new.to_text()}"
        )


@agent.command("read")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--agent", "name", required=True, help="Your agent name (as in agents.yaml).")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=_KEY_HELP,
)
@click.option(
    "--gateway-key",
    "gateway_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=_GATEWAY_KEY_HELP,
)
@handover_option
@keys_dir_option
def read_cmd(
    source: Path,
    name: str,
    key: Path | None,
    gateway_keys: tuple[Path, ...],
    handovers: tuple[Path, ...],
    keys_dir: Path | None,
) -> None:
    """Decrypt SOURCE (a topic file, or a `gateway replay` output directory)."""
    reader = _reader(name, key, gateway_keys, keys_dir, handovers)
    if source.is_dir():
        files = (
            sorted((source / "topics").glob("*.jsonl"))
            if (source / "topics").is_dir()
            else sorted(source.glob("*.jsonl"))
        )
    else:
        files = [source]
    rejected = read = 0
    for f in files:
        for item in reader.read_many(messages_in_file(f)):
            if isinstance(item, Received):
                read += 1
                sys.stdout.write(orjson.dumps(item.to_json()).decode() + "\n")
            elif source.is_dir() and item.foreign:
                continue  # another agent's topic file in a replay directory: not ours
            else:
                rejected += 1
                err_console.print(f"[red]rejected[/red] {item.position}: {escape(item.error)}")
    _report_handovers(reader)
    err_console.print(
        f"{read} message(s) read, {reader.duplicates} duplicate(s) dropped"
        + (f", {rejected} rejected" if rejected else "")
    )
    if rejected:
        sys.exit(1)


@agent.command("consume")
@click.argument("name")
@click.option(
    "--key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=_KEY_HELP,
)
@click.option(
    "--gateway-key",
    "gateway_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=_GATEWAY_KEY_HELP,
)
@handover_option
@click.option("--topic", help="Your topic [default: agent.NAME].")
@bootstrap_option
@click.option("--group", help="Consumer group [default agent-NAME].")
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="Stop after this many seconds without a message, counted from the moment the"
    " group assigns this consumer its partitions (default: run on).",
)
@click.option("--max", "max_messages", type=int, default=None, help="Stop after N messages.")
@keys_dir_option
def consume_cmd(
    name: str,
    key: Path | None,
    gateway_keys: tuple[Path, ...],
    handovers: tuple[Path, ...],
    topic: str | None,
    bootstrap: str | None,
    group: str | None,
    idle_timeout: float | None,
    max_messages: int | None,
    keys_dir: Path | None,
) -> None:
    """Read your topic: verify, decrypt, drop duplicates, print JSON lines.

    Offsets are committed only for messages that were opened and printed (or that are
    malformed or another agent's: those are reported and skipped). A message your keys
    cannot open stops the command (exit 2) with nothing committed from it on: run it
    again with the right --key/--gateway-key and the same --group to receive it. Exit 1
    when messages were skipped. A new group takes about 3 s to be assigned partitions."""
    from gateway.sdk.agent import AgentConsumer

    s = settings_from(keys_dir=keys_dir, bootstrap=bootstrap)
    broker = require_broker(s)
    reader = _reader(name, key, gateway_keys, keys_dir, handovers)

    def rejected(item: Rejected) -> None:
        err_console.print(
            f"[red]rejected[/red] {item.position}: {escape(item.error)}", soft_wrap=True
        )

    def assigned(partitions: list[int]) -> None:
        err_console.print(
            f"[dim]group {consumer.group_id}: partitions {partitions or 'none'} of "
            f"{consumer.topic} assigned after {consumer.assigned_after or 0:.1f}s[/dim]",
            soft_wrap=True,
        )

    consumer = AgentConsumer(
        reader,
        broker,
        topic or f"agent.{name}",
        group_id=group,
        idle_timeout=idle_timeout,
        max_messages=max_messages,
        on_rejected=rejected,
        on_assigned=assigned,
    )
    try:
        with consumer:
            for item in consumer:
                sys.stdout.write(orjson.dumps(item.to_json()).decode() + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        _report_handovers(reader)
        err_console.print(consumer.stats.summary())
    if consumer.stats.rejected:
        sys.exit(1)
