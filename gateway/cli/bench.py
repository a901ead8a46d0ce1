"""``gateway bench``: the gateway measured against a bare aiokafka loop and a per-event faust
agent, in one run on one embedded broker."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from gateway.cli.common import console

PHASES = ("core", "broker", "throughput", "latency", "scaling", "scaleout", "memory")


@click.command("bench")
@click.option(
    "--events",
    type=int,
    default=None,
    help="Input events for the throughput runs [100000; --quick: 4000].",
)
@click.option(
    "--per-event-events",
    type=int,
    default=None,
    help="How many of them the (slow) per-event faust agent reads [20000].",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A smoke run: tiny inputs; core, broker, throughput, latency, memory (<1 min).",
)
@click.option(
    "--skip-million",
    is_flag=True,
    help="Memory phase: stop at the first checkpoint (100k) instead of 1M events.",
)
@click.option(
    "--phases",
    default=None,
    help=f"Comma-separated subset of {','.join(PHASES)} (latency needs throughput).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Results JSON [bench-results/bench-<UTC time>.json].",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where deployments, keys and logs go while running [a temporary dir].",
)
def bench_cmd(
    events: int | None,
    per_event_events: int | None,
    quick: bool,
    skip_million: bool,
    phases: str | None,
    out: Path | None,
    workdir: Path | None,
) -> None:
    """Measure the gateway against a bare aiokafka loop and a per-event faust agent.

    Starts an embedded broker, fills an input topic with the realistic event mix, and
    runs every program under test as its own process: throughput and ratios (against the
    bare loop, and the bare loop producing the gateway's outputs per event), latency at
    half the gateway's maximum rate, worker RSS from 100k to 1M events, throughput by
    event size and by number of agents, and two workers on more partitions (checked
    against the offline core across rebalances). Prints the tables and writes the JSON.
    """
    from gateway.dev.bench import report
    from gateway.dev.bench.harness import Bench, Options

    opts = Options.quick() if quick else Options()
    if events is not None:
        opts = replace(opts, events=events)
    if per_event_events is not None:
        opts = replace(opts, per_event_events=per_event_events)
    if skip_million:
        opts = replace(opts, skip_million=True)
    if phases is not None:
        chosen = tuple(p.strip() for p in phases.split(",") if p.strip())
        unknown = set(chosen) - set(PHASES)
        if unknown:
            raise click.UsageError(
                f"unknown phase(s) {sorted(unknown)}; known: {', '.join(PHASES)}"
            )
        if "latency" in chosen and "throughput" not in chosen:
            raise click.UsageError("the latency phase needs the throughput phase")
        opts = replace(opts, phases=tuple(p for p in PHASES if p in chosen))
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        opts = replace(opts, workdir=workdir)
    out = out or Path("bench-results") / time.strftime("bench-%Y%m%dT%H%M%SZ.json", time.gmtime())

    def log(msg: str) -> None:
        console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")

    results = Bench(opts, log=log).run()
    argv = sys.argv[1:]
    if "bench" in argv:
        argv = argv[argv.index("bench") + 1 :]
    results["command"] = " ".join(["gateway", "bench", *argv])
    report.write(results, out)
    console.print()
    report.render(results, console)
    console.print(f"Results: {out}")
