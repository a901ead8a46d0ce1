"""The benchmark's results as tables, and the performance targets (throughput against the
bare aiokafka loop, the bare loop at equal output and the per-event faust agent, p99
latency, memory) checked against them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

# Issue 16's targets, with subject routing and publisher signatures on (issue 5 asked 0.5 x
# the bare loop before either existed); the faust ratio is issue 5's.
TARGET_RATIO_BARE = 0.35
TARGET_RATIO_EQUAL_OUTPUT = 0.6
TARGET_RATIO_PER_EVENT = 2.0
TARGET_P99_MS = 25.0
TARGET_RSS_GROWTH = 0.10


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what it asks, what was measured, and whether it is met (None: not
    measured in this run)."""
    out: list[dict[str, Any]] = []
    t = r.get("throughput")
    if t:
        out.append(
            {
                "target": f"gateway >= {TARGET_RATIO_BARE} x bare aiokafka loop",
                "measured": f"{t['ratio_vs_bare']:.2f} x",
                "met": t["ratio_vs_bare"] >= TARGET_RATIO_BARE,
            }
        )
        if "ratio_vs_bare_equal_output" in t:
            out.append(
                {
                    "target": f"gateway >= {TARGET_RATIO_EQUAL_OUTPUT} x bare loop at equal output",
                    "measured": f"{t['ratio_vs_bare_equal_output']:.2f} x",
                    "met": t["ratio_vs_bare_equal_output"] >= TARGET_RATIO_EQUAL_OUTPUT,
                }
            )
        out.append(
            {
                "target": f"gateway >= {TARGET_RATIO_PER_EVENT} x per-event faust agent",
                "measured": f"{t['ratio_vs_faust_per_event']:.2f} x",
                "met": t["ratio_vs_faust_per_event"] >= TARGET_RATIO_PER_EVENT,
            }
        )
    lat = r.get("latency")
    if lat:
        p99 = lat["to_agent_topic_ms"]["p99"]
        out.append(
            {
                "target": f"p99 publish->agent topic < {TARGET_P99_MS:g} ms at "
                f"{lat['fraction_of_max']:g} x max rate",
                "measured": f"{p99:.1f} ms",
                "met": (not math.isnan(p99)) and p99 < TARGET_P99_MS,
            }
        )
    mem = r.get("memory")
    if mem:
        full = mem["events"] >= 10 * mem["first_checkpoint"]
        out.append(
            {
                "target": f"RSS flat (within {TARGET_RSS_GROWTH:.0%}) from "
                f"{mem['first_checkpoint']:,} to {mem['events']:,} events",
                "measured": f"{mem['growth_after_first']:+.1%}",
                "met": (mem["growth_after_first"] <= TARGET_RSS_GROWTH) if full else None,
            }
        )
    so = r.get("scaleout")
    if so:
        out.append(
            {
                "target": "two workers raise throughput",
                "measured": f"{so['speedup']:.2f} x one worker",
                "met": so["speedup"] > 1.0,
            }
        )
        out.append(
            {
                "target": "records and consent state correct across rebalances",
                "measured": "correct" if so["rebalance"]["correct"] else "NOT correct",
                "met": so["rebalance"]["correct"],
            }
        )
    return out


def ratios_line(t: dict[str, Any]) -> str:
    """The gateway's rate against each ceiling, and what routing costs, in one line."""
    parts = [f"{t['ratio_vs_bare']:.2f} x the bare loop"]
    if "ratio_vs_bare_equal_output" in t:
        parts.append(
            f"{t['ratio_vs_bare_equal_output']:.2f} x the bare loop producing its "
            f"{t['bare_equal_output']['outputs_per_event']:.2f} outputs per event"
        )
    parts.append(f"{t['ratio_vs_faust_per_event']:.2f} x the per-event faust agent")
    line = "Gateway: " + ", ".join(parts)
    if "rerouting_cost" in t:
        line += (
            f"; routing costs {100 * t['rerouting_cost']:.0f} % of throughput when every"
            " event is re-routed"
        )
    return line


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def _rate(x: float) -> str:
    return f"{x:,.0f}"


def _batch_cells(b: dict[str, float] | None) -> tuple[str, str]:
    if not b:
        return "", ""
    phases = "/".join(f"{b[f'{p}_ms']:.1f}" for p in ("decide", "log", "disclose", "changelog"))
    return f"{b['events_per_batch']:.0f}", f"{b['batch_ms']:.1f} ({phases})"


def _table(
    title: str, columns: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 0
) -> Table:
    """A table whose first ``left`` columns are text (left-aligned), the rest figures."""
    tab = Table(title=title)
    for i, col in enumerate(columns):
        tab.add_column(col, justify="left" if i < left else "right")
    for row in rows:
        tab.add_row(*row)
    return tab


def render(r: dict[str, Any], console: Console) -> None:
    c = r.get("core")
    if c:
        us = c["us_per_event"]
        cols: tuple[str, ...] = ("parse", "decide", "seal", "other", "process", "record_json")
        # Per-event work outside `process` (results from before these stages lack them):
        # the routing decision, and feeding the aggregate windows.
        cols += tuple(k for k in ("route", "aggregate") if k in us)
        # The publisher's signature check (admission), per scheme, when measured.
        cols += tuple(k for k in sorted(us) if k.startswith("verify"))
        console.print(
            _table(
                f"Core alone (Pipeline.process, no Kafka, one core), µs per event; "
                f"{c['decisions_per_event']:.2f} decisions and "
                f"{c['messages_per_event']:.2f} sealed messages per event"
                + (
                    f", {c['outputs_per_event']:.2f} outputs in all, "
                    f"{c['contributions_per_event']:.2f} aggregate contributions"
                    if "outputs_per_event" in c
                    else ""
                ),
                (*cols, "events/s", "bound"),
                [
                    (
                        *(f"{us[k]:.0f}" for k in cols),
                        _rate(c["events_per_s"]),
                        _rate(c["bound_events_per_s"]),
                    )
                ],
            )
        )
    b = r.get("broker")
    if b:
        measures = [("produce, acks=all", b["produce_ack_ms"])] + [
            (
                f"send -> consumed, fetch_max_wait_ms={row['fetch_max_wait_ms']}",
                row["send_to_consumed_ms"],
            )
            for row in b["fetch_wait"]
        ]
        console.print(
            _table(
                "The broker alone, no gateway (ms): acks=all produce round trip, "
                "and send -> consumed on an idle topic by fetch_max_wait_ms",
                ("measure", "p50", "p95", "p99"),
                [(name, *(f"{p[k]:.1f}" for k in ("p50", "p95", "p99"))) for name, p in measures],
                left=1,
            )
        )
    t = r.get("throughput")
    if t:
        g = t["gateway"]["events_per_s"]
        eq = t.get("bare_equal_output")
        programs = [
            ("bare aiokafka loop, one output per event (ceiling)", t["bare"]),
            (
                f"bare loop, the gateway's {eq['outputs_per_event']:.2f} outputs per event "
                f"of {eq['avg_output_bytes']:.0f} B (ceiling at equal output)"
                if eq
                else "",
                eq,
            ),
            ("bare loop, hand-built batches (context)", t.get("bare_batch")),
            ("faust noack_take, no work (context)", t.get("faust_noop")),
            ("per-event faust agent", t["faust_per_event"]),
            ("gateway worker", t["gateway"]),
            (
                "gateway worker, every event re-routed (routing cost: "
                f"{100 * t.get('rerouting_cost', 0.0):.0f} % of throughput)",
                t.get("gateway_rerouted"),
            ),
        ]
        console.print(
            _table(
                f"Throughput, {r['input']['events']:,} events of "
                f"{r['input']['avg_event_bytes']:.0f} B on average ({r['machine']['cpus']} CPUs)",
                ("program", "events/s", "gateway is", "peak RSS"),
                [
                    (
                        name,
                        _rate(row["events_per_s"]),
                        "" if row is t["gateway"] else f"{g / row['events_per_s']:.2f} x",
                        _mib(row["peak_rss"]),
                    )
                    for name, row in programs
                    if row is not None
                ],
                left=1,
            )
        )
        console.print(ratios_line(t))
        gw = t.get("gateway") or {}
        us_gw = gw.get("us_per_event")
        if us_gw:
            # The worker's own account (its /metrics), per event: where its time went.
            console.print(
                f"Gateway worker, µs per event in batches of "
                f"{gw['batches']['events_per_batch']:.0f}: "
                + ", ".join(f"{k} {v:.0f}" for k, v in us_gw.items())
                + (
                    " (decide_cpu: the decide phase's CPU time, the rest of it waiting for a"
                    " CPU; gc: the garbage collector, in any phase)"
                    if "gc" in us_gw
                    else ""
                )
            )
    lat = r.get("latency")
    if lat:
        rows = []
        for row in r.get("latency_sweep") or [lat]:
            p = row["to_agent_topic_ms"]
            rows.append(
                (
                    f"{row['fraction_of_max']:g} x max",
                    _rate(row["rate"]),
                    f"{row['messages']:,}",
                    *(f"{p[k]:.1f}" for k in ("p50", "p95", "p99", "p100")),
                    f"{row['to_release_ms']['p99']:.1f}",
                    f"{row.get('worker_cpu_share', math.nan):.0%}",
                    f"{row.get('broker_cpu_share', math.nan):.0%}",
                    *_batch_cells(row.get("batches")),
                )
            )
        console.print(
            _table(
                "Latency, publish -> agent topic (ms; 'released': until the gateway's producer "
                "took the message)",
                (
                    "load",
                    "events/s",
                    "messages",
                    "p50",
                    "p95",
                    "p99",
                    "max",
                    "released p99",
                    "worker CPU",
                    "broker CPU",
                    "events/batch",
                    "batch ms (decide/log/disclose/changelog)",
                ),
                rows,
            )
        )
    mem = r.get("memory")
    if mem:
        console.print(
            _table(
                f"Worker memory over {mem['events']:,} events ({mem['customers']:,} customers)",
                (
                    f"RSS at {mem['first_checkpoint']:,}",
                    f"RSS at {mem['events']:,}",
                    "max after first",
                    "growth",
                    "peak RSS",
                    "events/s",
                    "time",
                    "combiner windows (max)",
                    "partition skew (max)",
                ),
                [
                    (
                        _mib(mem["rss_at_first"]),
                        _mib(mem["rss_at_end"]),
                        _mib(mem["max_rss_after_first"]),
                        f"{mem['growth_after_first']:+.1%}",
                        _mib(mem["peak_rss"]),
                        _rate(mem["events_per_s"]),
                        f"{mem['seconds']:.0f} s",
                        f"{mem.get('max_combiner_windows', 0):,}",
                        f"{mem.get('max_partition_skew', 0):,} events"
                        f" / {mem.get('max_watermark_spread_hours', 0.0):.0f} h",
                    )
                ],
            )
        )
    sc = r.get("scaling")
    if sc and sc["size"]:
        console.print(
            _table(
                "Gateway throughput by event size",
                (
                    "avg event",
                    "gateway events/s",
                    "gateway MB/s",
                    "bare events/s",
                    "gateway / bare",
                ),
                [
                    (
                        f"{row['avg_event_bytes']:,.0f} B",
                        _rate(row["gateway_events_per_s"]),
                        f"{row['gateway_mb_per_s']:.2f}",
                        _rate(row["bare_events_per_s"]),
                        f"{row['ratio_vs_bare']:.2f}",
                    )
                    for row in sc["size"]
                ],
            )
        )
    if sc and sc["agents"]:
        console.print(
            _table(
                "Gateway throughput by number of agents",
                ("agents", "decisions/event", "messages/event", "events/s", "decisions/s"),
                [
                    (
                        str(row["agents"]),
                        f"{row['decisions_per_event']:.2f}",
                        f"{row['messages_per_event']:.2f}",
                        _rate(row["gateway_events_per_s"]),
                        _rate(row["decisions_per_s"]),
                    )
                    for row in sc["agents"]
                ],
            )
        )
    so = r.get("scaleout")
    if so:
        console.print(
            _table(
                f"Scale-out on {so['partitions']} partitions",
                ("workers", "events/s", "x one worker"),
                [
                    ("1", _rate(so["one_worker"]["events_per_s"]), "1.00"),
                    ("2", _rate(so["two_workers"]["events_per_s"]), f"{so['speedup']:.2f}"),
                ],
            )
        )
        rb = so["rebalance"]
        console.print(
            f"Across rebalances ({'; '.join(rb['timeline'])}): "
            f"{rb['records_unique']:,}/{rb['records_expected']:,} records "
            f"({rb['records_duplicate']:,} duplicates, {rb['records_mismatched']} differing), "
            f"{rb['messages']:,} agent messages ({rb['messages_without_record']} without a "
            f"record, {rb['messages_missing']} missing), {rb['subjects_checked']:,} consent "
            f"states ({rb['consent_mismatched']} differing): "
            + ("[green]correct[/green]" if rb["correct"] else "[red]NOT correct[/red]")
        )
    console.print(
        _table(
            "Targets (issues 5 and 16)",
            ("target", "measured", "met"),
            [
                (
                    row["target"],
                    row["measured"],
                    (
                        ("[green]yes[/green]" if row["met"] else "[red]no[/red]")
                        if row["met"] is not None
                        else "not measured (short run)"
                    ),
                )
                for row in targets(r)
            ],
            left=3,
        )
    )
    m = r["machine"]
    load = "/".join(f"{x:.1f}" for x in m.get("load_average_at_start", ()))
    console.print(
        f"Whole run: {r['wall_seconds']:.0f} s on {m['cpus']} CPUs, Python "
        f"{m['python']}; load average at start {load} (other work on the "
        f"machine shows up in every figure)"
    )


def write(r: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    r = {**r, "targets": targets(r)}
    path.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2))
