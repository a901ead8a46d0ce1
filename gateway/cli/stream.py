"""``gateway run``, ``gateway demo`` and ``gateway publish``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gateway.cli.common import (
    bootstrap_option,
    console,
    keys_dir_option,
    policy_option,
    require_broker,
    settings_from,
)

if TYPE_CHECKING:
    # Only the type: importing the worker at run time would load faust for every command.
    from gateway.stream.worker import Role


@click.command("run")
@click.option(
    "--role",
    type=click.Choice(["all", "gateway", "ledger"]),  # the values of Role
    default="all",
    show_default=True,
    help="gateway: the policy stream; ledger: the disclosure log sink; all: both in one worker.",
)
@click.option("--loglevel", default="info", show_default=True)
@policy_option
@keys_dir_option
def run_cmd(role: Role, loglevel: str, policy: Path | None, keys_dir: Path | None) -> None:
    """Run a worker against the broker in GATEWAY_BOOTSTRAP_SERVERS.

    Waits up to 120 s for the broker, saying every 5 s what it waits for; the worker's
    /health/live and /health/ready pages tell when it is up and when it is ready."""
    from gateway.kafka.admin import wait_for_broker
    from gateway.kafka.clients import kafka_python_security
    from gateway.stream.worker import run

    settings = settings_from(policy, keys_dir)
    if settings.bootstrap_servers:
        # Before faust starts (its logging is not set up yet): straight to stderr, so an
        # unreachable broker is reported within seconds rather than after the timeout.
        wait_for_broker(
            settings.bootstrap_servers,
            timeout=BROKER_WAIT_SECONDS,
            security=kafka_python_security(settings),
            report=lambda message: click.echo(f"gateway run: {message}", err=True),
        )
        base = f"http://{settings.web_host}:{settings.web_port}"
        click.echo(
            f"gateway run: the broker at {settings.bootstrap_servers} answers; starting the"
            f" {role} worker (live: {base}/health/live, ready: {base}/health/ready)",
            err=True,
        )
    run(settings, role, loglevel)


# How long `gateway run` waits for the broker before giving up.
BROKER_WAIT_SECONDS = 120.0


@click.command("demo")
@policy_option
@keys_dir_option
def demo_cmd(policy: Path | None, keys_dir: Path | None) -> None:
    """Everything locally: embedded broker, worker, sample events, agents, report."""
    from gateway.dev.demo import run_demo

    sys.exit(run_demo(settings_from(policy, keys_dir), console))


@click.command("publish")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@bootstrap_option
@click.option("--topic", help="Input topic [env GATEWAY_INPUT_TOPIC].")
@click.option(
    "--publisher",
    "publisher",
    metavar="NAME",
    envvar="GATEWAY_PUBLISHER",
    help="Sign as this publisher of the policy's publishers section [env GATEWAY_PUBLISHER].",
)
@click.option(
    "--key",
    "key",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GATEWAY_PUBLISHER_KEY",
    help="The publisher's signing key: its Ed25519 private key (PEM) or HMAC secret (hex)"
    " [env GATEWAY_PUBLISHER_KEY].",
)
@click.option(
    "--publisher-keys",
    "publisher_keys",
    envvar="GATEWAY_PUBLISHER_KEYS",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Sign each event as the publisher the policy allows to send its type, with that"
    " publisher's key in this directory (NAME.key or NAME.secret): for a file that mixes"
    " back ends (a migration, a test). `gateway demo` leaves such keys in"
    " .gateway/publisher-keys, and `gateway dev up`'s env file sets it"
    " [env GATEWAY_PUBLISHER_KEYS].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only validate: list every problem of every line, in full; send nothing.",
)
def publish_cmd(
    events: Path,
    bootstrap: str | None,
    topic: str | None,
    publisher: str | None,
    key: Path | None,
    publisher_keys: Path | None,
    dry_run: bool,
) -> None:
    """Validate, sign and publish EVENTS (JSON lines), keyed by customer id.

    An invalid line is reported and not sent; the others are. Without --publisher and --key
    (or --publisher-keys) the events go out unsigned, and the gateway dead-letters them.
    With --dry-run nothing is sent (no broker needed) and each problem names the fields as
    written in the file."""
    if dry_run:
        s = settings_from(bootstrap=bootstrap, input_topic=topic)
        sys.exit(_dry_run(events, s.max_event_bytes))
    from gateway.sdk.publisher import Publisher

    if (publisher is None) != (key is None):
        raise click.UsageError("give --publisher NAME and --key FILE together")
    if publisher is not None:
        publisher_keys = None  # one named publisher signs everything (it wins over the env)
    if publisher is None and publisher_keys is None:
        console.print(
            "[yellow]warning:[/yellow] no --publisher/--key: events are sent unsigned and the"
            " gateway dead-letters them (reason unsigned)"
        )
    s = settings_from(bootstrap=bootstrap, input_topic=topic)
    signers = None
    if publisher_keys is not None:
        from gateway.policy import load_policy
        from gateway.runtime import signers_from

        signers = signers_from(load_policy(s.policy_path), publisher_keys)
    with Publisher(
        require_broker(s),
        s.input_topic,
        name=publisher,
        key=key,
        signers=signers,
        max_event_bytes=s.max_event_bytes,
    ) as pub:
        report = pub.publish_file(events)
    for line, reason, error in report.rejected:
        console.print(f"[red]not sent[/red] line {line} ({reason}): {error}")
    signed = (
        f" signed as {publisher}"
        if publisher
        else (" signed per event type" if publisher_keys else "")
    )
    console.print(
        f"{report.sent} event(s) sent to {s.input_topic}{signed}, {len(report.rejected)} rejected"
    )
    if report.rejected:
        sys.exit(1)


def _dry_run(events: Path, max_bytes: int) -> int:
    """Validate every line of ``events``; print each invalid line's problems; the exit code."""
    from gateway.replay import iter_lines
    from gateway.sdk.validation import explain

    valid = invalid = 0
    with events.open("rb") as fh:
        for lineno, raw in iter_lines(fh):
            problems = explain(raw, max_bytes=max_bytes)
            if not problems:
                valid += 1
                continue
            invalid += 1
            # No markup: the problems quote the publisher's own names, which may hold "[".
            console.print(f"line {lineno}: {len(problems)} problem(s)", style="red", markup=False)
            for problem in problems:
                console.print(f"  {problem}", markup=False)
    console.print(f"{valid} valid, {invalid} invalid; nothing sent (--dry-run)")
    return 1 if invalid else 0
