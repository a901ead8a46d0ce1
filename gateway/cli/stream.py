"""``gateway run``, ``gateway demo`` and ``gateway publish``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway.cli.common import console, keys_dir_option, policy_option, settings_from


@click.command("run")
@click.option("--role", type=click.Choice(["all", "gateway", "ledger"]), default="all",
              show_default=True, help="gateway: the policy stream; ledger: the disclosure "
              "log sink; all: both in one worker.")
@click.option("--loglevel", default="info", show_default=True)
@policy_option
@keys_dir_option
def run_cmd(role: str, loglevel: str, policy: Path | None, keys_dir: Path | None) -> None:
    """Run a worker against the broker in GATEWAY_BOOTSTRAP_SERVERS."""
    from gateway.stream.worker import run

    run(settings_from(policy, keys_dir), role, loglevel)  # type: ignore[arg-type]


@click.command("demo")
@policy_option
@keys_dir_option
def demo_cmd(policy: Path | None, keys_dir: Path | None) -> None:
    """Everything locally: embedded broker, worker, sample events, agents, report."""
    from gateway.demo import run_demo

    sys.exit(run_demo(settings_from(policy, keys_dir), console))


@click.command("publish")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--bootstrap", help="Kafka bootstrap address [env GATEWAY_BOOTSTRAP_SERVERS].")
@click.option("--topic", help="Input topic [env GATEWAY_INPUT_TOPIC].")
def publish_cmd(events: Path, bootstrap: str | None, topic: str | None) -> None:
    """Validate and publish EVENTS (JSON lines), keyed by customer id.

    An invalid line is reported and not sent; the others are."""
    from gateway.sdk.publisher import Publisher

    s = settings_from(bootstrap_servers=bootstrap, input_topic=topic)
    if not s.bootstrap_servers:
        raise click.UsageError("no broker: pass --bootstrap or set GATEWAY_BOOTSTRAP_SERVERS")
    with Publisher(s.bootstrap_servers, s.input_topic,
                   max_event_bytes=s.max_event_bytes) as pub:
        report = pub.publish_file(events)
    for line, reason, error in report.rejected:
        console.print(f"[red]not sent[/red] line {line} ({reason}): {error}")
    console.print(f"{report.sent} event(s) sent to {s.input_topic}, "
                  f"{len(report.rejected)} rejected")
    if report.rejected:
        sys.exit(1)
