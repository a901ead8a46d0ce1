"""``gateway replay``: run a file of events through the core, offline."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from gateway.cli.common import console, keys_dir_option, policy_option, settings_from
from gateway.policy import load_policy
from gateway.replay import replay
from gateway.runtime import build_core, ensure_demo_keys


@click.command("replay")
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory.",
)
@click.option(
    "--demo-keys/--no-demo-keys",
    default=True,
    show_default=True,
    help="Create missing gateway and agent keys (local use).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    default=None,
    help="Subject partitions to route aggregate contributions to, as the stream does "
    "(default: GATEWAY_PARTITIONS).",
)
@policy_option
@keys_dir_option
def replay_cmd(
    events: Path,
    out_dir: Path,
    demo_keys: bool,
    partitions: int | None,
    policy: Path | None,
    keys_dir: Path | None,
) -> None:
    """Run EVENTS (JSON lines) through the policy and write what each agent would get.

    The file is trusted as a whole: publisher signatures live in Kafka record headers, not
    in a file, so they are not checked here."""
    s = settings_from(policy, keys_dir)
    p = load_policy(s.policy_path)
    if demo_keys:
        for what in ensure_demo_keys(s, p):
            console.print(f"created {what}")
    core = build_core(s, p)
    summary = replay(core.pipeline, events, out_dir, partitions=partitions or s.partitions)
    table = Table(title=f"replay of {events} (policy {p.policy_version})")
    cols = ("agent", "disclosed", "contributed", "aggregates", "withheld", "erasure notices")
    for col in (*cols, "topic file"):
        table.add_column(col)
    for name, agent in p.agents.items():
        table.add_row(
            name,
            str(summary.outcomes[(name, "disclosed")]),
            str(summary.outcomes[(name, "contributed")]),
            str(summary.outcomes[(name, "aggregated")]),
            str(summary.outcomes[(name, "withheld")]),
            str(summary.outcomes[(name, "erasure_notice")]),
            str(out_dir / "topics" / f"{agent.topic}.jsonl"),
        )
    console.print(table)
    if summary.aggregates:
        suppressed = sum(t.suppressed() for t in summary.aggregates)
        console.print(
            f"{len(summary.aggregates)} aggregate tables emitted ({suppressed} entries "
            f"suppressed); in the clear in {out_dir / 'aggregates.jsonl'}"
        )
    console.print(
        f"{summary.lines} lines: {summary.events} events processed, "
        f"{summary.dead_letters} dead-lettered ({out_dir / 'deadletter.jsonl'}); "
        f"records in {out_dir / 'records.jsonl'}"
    )
    if summary.dead_letters:
        for line in (out_dir / "deadletter.jsonl").read_text().splitlines()[:10]:
            console.print(f"  [red]dead letter[/red] {line}")
