"""``gateway dev up / status / down``: a local gateway stack to build against."""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
import orjson

from gateway.cli.common import db_option, keys_dir_option, policy_option, settings_from
from gateway.dev.stack import (
    StackPaths,
    StackState,
    Supervisor,
    alive,
    check_not_running,
    prepare,
    read_state,
    reviewer_password,
    running,
    start_detached,
    stop,
)
from gateway.errors import GatewayError

_TOPICS_NOTE = (
    "The broker keeps topics in memory: they start empty on every `gateway dev up` "
    "(the ledger and the keys are kept)."
)


@click.group("dev")
def dev() -> None:
    """A local gateway to build against: the embedded Kafka broker, a worker with the
    ledger sink, and the review page, in the background (`dev up`) until `dev down`."""


def _paths(policy: Path | None, keys_dir: Path | None, db: str | None) -> StackPaths:
    return StackPaths.for_settings(settings_from(policy, keys_dir, db))


@dev.command("up")
@click.option(
    "--foreground", is_flag=True, help="Run in this terminal until Ctrl-C (default: detached)."
)
@policy_option
@keys_dir_option
@db_option
def up_cmd(foreground: bool, policy: Path | None, keys_dir: Path | None, db: str | None) -> None:
    """Start the stack and print its addresses, topics, keys and reviewer credentials.

    Keys, the reviewer password and the ledger are created on the first run and reused
    after; the state is kept in .gateway/dev/ (next to the keys)."""
    settings = settings_from(policy, keys_dir, db)
    paths = StackPaths.for_settings(settings)
    state = running(paths)
    if state is not None and alive(state.supervisor):
        click.echo(f"A local stack is already running (supervisor pid {state.supervisor.pid}).")
        _print_summary(state, None)
        return
    check_not_running(paths)
    prepared = prepare(settings, paths)
    for what in prepared.created:
        click.echo(f"created {what}")
    if foreground:

        def ready(state: StackState) -> None:
            _print_summary(state, prepared.password)
            click.echo("Ctrl-C stops the stack.")

        supervisor = Supervisor(
            settings,
            paths,
            prepared.ports,
            on_ready=ready,
            log=lambda line: click.secho(line, dim=True, err=True),
        )
        sys.exit(supervisor.run())
    click.echo("starting the local stack (broker, worker, review page)…")
    state = start_detached(settings, paths)
    _print_summary(state, prepared.password)


@dev.command("status")
@click.option("--show-password", is_flag=True, help="Print the reviewer password again.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@policy_option
@keys_dir_option
@db_option
def status_cmd(
    show_password: bool, fmt: str, policy: Path | None, keys_dir: Path | None, db: str | None
) -> None:
    """Whether the stack runs, and its addresses, topics, keys and credentials (exit 1
    when it does not run)."""
    paths = _paths(policy, keys_dir, db)
    state = running(paths)
    password = reviewer_password(paths) if show_password else None
    if fmt == "json":
        out: dict[str, Any] = {"running": state is not None}
        if state is not None:
            out.update(asdict(state))
        if state is not None:
            out["parts"] = _parts(state)
        if password is not None:
            out["reviewer_password"] = password
        click.echo(orjson.dumps(out).decode())
    elif state is None:
        click.echo("No local stack is running; `gateway dev up` starts one.")
        if password is not None:
            click.echo(f"Reviewer password: {password}")
    else:
        _print_summary(state, password, shown_again=True)
        click.echo("Parts:")
        for name, ok in _parts(state).items():
            click.echo(f"  {name:<8} {'running' if ok else 'NOT RUNNING'}")
    if state is None or not all(_parts(state).values()):
        sys.exit(1)


@dev.command("down")
@policy_option
@keys_dir_option
@db_option
def down_cmd(policy: Path | None, keys_dir: Path | None, db: str | None) -> None:
    """Stop the stack. The ledger, the keys and the reviewer password are kept."""
    paths = _paths(policy, keys_dir, db)
    state = read_state(paths)
    if not stop(paths):
        click.echo("No local stack is running.")
        return
    assert state is not None
    click.echo(f"Stopped the local stack (supervisor pid {state.supervisor.pid}).")
    click.echo(f"Kept: the ledger ({state.ledger_url}) and the keys ({state.keys_dir}).")
    click.echo("The broker's topics were in memory and are gone.")


def _parts(state: StackState) -> dict[str, bool]:
    parts = {"supervisor": alive(state.supervisor)}
    parts.update({name: alive(p) for name, p in state.processes.items()})
    return parts


def _print_summary(state: StackState, password: str | None, *, shown_again: bool = False) -> None:
    if state.status != "ready":
        raise GatewayError(f"the local stack is {state.status}: {state.error or 'not ready yet'}")
    echo = click.echo
    internal = [
        t for t in state.topics if t != state.input_topic and t not in state.agent_topics.values()
    ]
    partitions = max(state.topics.values(), default=0)
    echo("")
    echo(
        f"Local gateway stack ready (started in {state.ready_after:.1f}s; "
        f"`gateway dev down` stops it)"
    )
    echo(f"  Kafka bootstrap   {state.bootstrap}")
    echo(f"  Publish to        {state.input_topic}  ({partitions} partitions per topic)")
    echo("  Agent topics      " + ", ".join(f"{t} ({a})" for a, t in state.agent_topics.items()))
    echo(f"  Gateway topics    {', '.join(internal)}")
    echo(f"                    {_TOPICS_NOTE}")
    echo(f"  Review page       {state.review_url}")
    echo(f"    user            {state.reviewer_user}")
    if password is None:
        echo(
            "    password        (shown on the first `dev up`; again: "
            "`gateway dev status --show-password`)"
        )
    else:
        note = "" if shown_again else "  (shown once; again: `gateway dev status --show-password`)"
        echo(f"    password        {password}{note}")
    echo(f"  Worker health     {state.health_url}  (metrics: /metrics)")
    echo(f"  Keys              {state.keys_dir}")
    echo(f"    gateway public key (agents verify with it)  {state.gateway_public_key}")
    echo("    demo agents' private keys:")
    for name, key in state.agent_private_keys.items():
        echo(f"      {name:<12} {key}")
    if state.publisher_keys:
        echo("    demo publishers' keys:")
        for key in state.publisher_keys:
            echo(f"      {key}")
    else:
        echo("    demo publishers' keys: none (this policy has no publisher keys)")
    echo(f"  Ledger            {state.ledger_url}")
    echo(f"  Logs              {state.logs}")
    echo("")
    echo("Try it:")
    echo(f"  . {state.env_file}        # GATEWAY_BOOTSTRAP_SERVERS and the rest, for this shell")
    echo("  gateway publish gateway/data/sample_events.jsonl")
    agent, key = next(iter(state.agent_private_keys.items()), ("shipping", "AGENT.key"))
    echo(
        f"  gateway agent consume {agent} --key {key} --gateway-key "
        f"{state.gateway_public_key} --idle-timeout 5"
    )
    echo("  gateway deadletter list ; gateway log list")
