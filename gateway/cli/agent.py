"""``gateway agent read``: the agent side — verify, decrypt, print JSON lines."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from gateway.agent_reader import AgentReader, Received, messages_in_file
from gateway.cli.common import err_console, keys_dir_option, settings_from
from gateway.keys import agent_key_paths


@click.group()
def agent() -> None:
    """What an agent runs to read its messages."""


def _reader(name: str, key: Path | None, gateway_key: Path | None,
            keys_dir: Path | None) -> AgentReader:
    s = settings_from(keys_dir=keys_dir)
    return AgentReader(name, key or agent_key_paths(s.keys_dir, name).private,
                       gateway_key or s.signing_public_key_path)


@agent.command("read")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--agent", "name", required=True, help="Your agent name (as in agents.yaml).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your private key [default KEYS_DIR/agents/NAME.key].")
@click.option("--gateway-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The gateway's public signing key [default KEYS_DIR/gateway-signing.pub].")
@keys_dir_option
def read_cmd(source: Path, name: str, key: Path | None, gateway_key: Path | None,
             keys_dir: Path | None) -> None:
    """Decrypt SOURCE (a topic file, or a `gateway replay` output directory)."""
    reader = _reader(name, key, gateway_key, keys_dir)
    if source.is_dir():
        files = sorted((source / "topics").glob("*.jsonl")) if (source / "topics").is_dir() \
            else sorted(source.glob("*.jsonl"))
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
                err_console.print(f"[red]rejected[/red] {item.position}: {item.error}")
    err_console.print(f"{read} message(s) read, {reader.duplicates} duplicate(s) dropped"
                      + (f", {rejected} rejected" if rejected else ""))
    if rejected:
        sys.exit(1)


@agent.command("consume")
@click.argument("name")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your private key [default KEYS_DIR/agents/NAME.key].")
@click.option("--gateway-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The gateway's public signing key [default KEYS_DIR/gateway-signing.pub].")
@click.option("--topic", help="Your topic [default: agent.NAME].")
@click.option("--bootstrap", help="Kafka bootstrap address [env GATEWAY_BOOTSTRAP_SERVERS].")
@click.option("--group", help="Consumer group [default agent-NAME].")
@click.option("--idle-timeout", type=float, default=None,
              help="Stop after this many seconds without a message (default: run on).")
@click.option("--max", "max_messages", type=int, default=None, help="Stop after N messages.")
@keys_dir_option
def consume_cmd(name: str, key: Path | None, gateway_key: Path | None, topic: str | None,
                bootstrap: str | None, group: str | None, idle_timeout: float | None,
                max_messages: int | None, keys_dir: Path | None) -> None:
    """Read your topic: verify, decrypt, drop duplicates, print JSON lines."""
    from gateway.sdk.agent import AgentConsumer

    s = settings_from(keys_dir=keys_dir, bootstrap_servers=bootstrap)
    if not s.bootstrap_servers:
        raise click.UsageError("no broker: pass --bootstrap or set GATEWAY_BOOTSTRAP_SERVERS")
    reader = _reader(name, key, gateway_key, keys_dir)
    consumer = AgentConsumer(reader, s.bootstrap_servers, topic or f"agent.{name}",
                             group_id=group)
    rejected = 0
    try:
        for item in consumer.messages(idle_timeout=idle_timeout, max_messages=max_messages):
            if isinstance(item, Received):
                sys.stdout.write(orjson.dumps(item.to_json()).decode() + "\n")
                sys.stdout.flush()
            else:
                rejected += 1
                err_console.print(f"[red]rejected[/red] {item.position}: {item.error}")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    err_console.print(f"{reader.duplicates} duplicate(s) dropped, {rejected} rejected")
