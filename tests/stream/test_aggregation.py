"""Aggregate-only agents on the real embedded broker: a `gateway run` worker (or two, one
SIGKILLed mid-window) emits the same final aggregates as the offline replay, sealed for the
agent, each with its ``aggregated`` record, and nothing about an individual."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from gateway.aggregates import AggregateSet
from gateway.dev.demo import shop_traffic
from gateway.dev.samples import random_events, scenario
from gateway.kafka.admin import ensure_topics
from gateway.keys import demo_agent_private_key
from gateway.routing import subject_partition
from gateway.sdk.reader import AgentReader, Received
from gateway.stream.aggregation import aggregates_topic
from tests.stream.helpers import Env, Worker, free_port

pytestmark = pytest.mark.broker

AGENT = "analytics"


def publish(env: Env, lines: list[bytes]) -> None:
    with env.publisher() as pub:
        report = pub.publish_many(enumerate(lines, 1))
    assert report.sent == len(lines) and not report.rejected


def _content(body: dict[str, Any]) -> dict[str, Any]:
    """A window's body without what depends on when it was emitted (its revision number:
    intermediate revisions depend on when partials reach the combiner) or how it was
    sealed."""
    return {k: v for k, v in body.items() if k not in ("revision", "_gateway")}


def _window(body: dict[str, Any]) -> tuple[Any, Any]:
    return body["window"]["start"], body["window"]["size"]


def replay_final(env: Env, lines: list[bytes]) -> dict[tuple[Any, Any], dict[str, Any]]:
    """The offline replay's final revision per window (as `gateway replay` drives it)."""
    pipeline = env.core.pipeline
    n = env.settings.partitions
    aggs = AggregateSet(env.policy, n)
    states: dict[str, Any] = {}
    latest: dict[tuple[Any, Any], dict[str, Any]] = {}

    def keep(tables: Iterable[Any]) -> None:
        for t in tables:
            if t.agent == AGENT:
                latest[_window(t.body())] = _content(t.body())

    for line in lines:
        out = pipeline.process(line, states, verify=False)
        if out.event is not None and out.dead_letter is None:
            part = subject_partition(out.event.customer_id, n)
            keep(aggs.event(part, out.event.occurred_at, out.contributions))
    keep(aggs.close())
    return latest


def stream_received(env: Env) -> list[Received]:
    """Every aggregate message on the agent's topic, opened with the agent's key."""
    reader = AgentReader(
        AGENT,
        demo_agent_private_key(env.settings.keys_dir, AGENT),
        env.settings.signing_public_key_path,
    )
    got = []
    for item in reader.read_many((p, v) for p, v, _ in env.topic(env.agent_topic(AGENT))):
        if isinstance(item, Received):  # None: a recognised duplicate (a re-emission)
            got.append(item)
        else:
            raise AssertionError(item)
    return got


def stream_final(received: list[Received]) -> dict[tuple[Any, Any], dict[str, Any]]:
    best: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in received:
        assert r.kind == "aggregate"
        body = r.payload
        have = best.get(_window(body))
        if have is None or have["revision"] < body["revision"]:
            best[_window(body)] = body
    return {k: _content(v) for k, v in best.items()}


def wait_equal(
    env: Env, want: dict[tuple[Any, Any], dict[str, Any]], timeout: float, w: list[Worker]
) -> list[Received]:
    deadline = time.monotonic() + timeout
    while True:
        received = stream_received(env)
        got = stream_final(received)
        if got == want:
            return received
        if time.monotonic() > deadline:
            missing = sorted(set(want) - set(got))[:5]
            differ = [k for k in want if k in got and got[k] != want[k]][:3]
            logs = "\n".join(x.log()[-3000:] for x in w)
            raise AssertionError(
                f"stream {len(got)} windows, replay {len(want)}; missing {missing};"
                f" different {differ}\n{logs}"
            )
        time.sleep(1.0)


def identifiers(lines: list[bytes]) -> set[str]:
    """Every customer id, event id, session id and order id the events carry."""
    out: set[str] = set()
    for line in lines:
        ev = orjson.loads(line)
        out.add(ev["event_id"])
        out.add(ev["subject"]["customer_id"])
        data = ev.get("data") or {}
        for key in ("session_id", "order_id", "order_number"):
            if isinstance(data.get(key), str):
                out.add(data[key])
    return out


def check_outputs(env: Env, received: list[Received], lines: list[bytes]) -> None:
    """Every message has its ``aggregated`` record; no identifier or pseudonym in any
    payload."""
    records = env.records()
    aggregated = {r.record_id: r for r in records if r.outcome == "aggregated"}
    for r in received:
        rec = aggregated[r.disclosure_id]
        assert rec.agent == AGENT and rec.subject_ref == ""
    secrets = identifiers(lines) | {r.subject_ref for r in records if r.subject_ref}
    secrets = {s for s in secrets if len(s) >= 6}
    for r in received:
        text = orjson.dumps(r.payload).decode()
        leaked = [s for s in secrets if s in text]
        assert not leaked, leaked[:5]


def forge_partial(env: Env) -> None:
    """A partial with a huge count for a window of the input, written to the aggregates
    topic by someone who is not a worker (no valid MAC): the combiner must ignore it."""
    doc = {
        "agent": AGENT,
        "partition": 0,
        "size": 3600,
        "start": 1772442000,  # 2026-03-02 09:00 UTC
        "seq": 10**9,
        "late": 0,
        "watermark": 1772442000,
        "events": [f"e{i}" for i in range(20)],
        "subjects": [f"s{i}" for i in range(20)],
        "tables": {"pages": [[["/forged"], [f"s{i}" for i in range(20)], 10**6, {}]]},
    }
    p = KafkaProducer(bootstrap_servers=[env.settings.bootstrap_servers])
    key = f"#p:{AGENT}:0:3600:1772442000".encode()
    p.send(aggregates_topic(env.settings), key=key, value=orjson.dumps(doc), partition=0)
    p.send(
        aggregates_topic(env.settings),
        key=key,
        value=orjson.dumps(doc),
        partition=0,
        headers=[("gateway-mac", b"0" * 64)],
    )
    p.flush()
    p.close()


def run_one_worker(env: Env, lines: list[bytes], timeout: float = 120, idle: float = 8) -> None:
    want = replay_final(env, lines)
    assert want, "the replay emits some windows"
    # The idle time must exceed the longest time a partition with a backlog waits for
    # its next batch (else it counts as caught up too early, and its later partials come
    # for windows already closed).
    with Worker(env, extra_env={"GATEWAY_AGGREGATE_IDLE_SECONDS": str(idle)}) as w:
        forge_partial(env)
        publish(env, lines)
        w.wait_processed(len(lines), timeout=timeout)
        received = wait_equal(env, want, timeout, [w])
    check_outputs(env, received, lines)


def test_samples_and_shop_traffic_give_the_replays_aggregates(env: Env) -> None:
    lines = [orjson.dumps(e) for e in scenario()] + shop_traffic(600, customers=120)
    run_one_worker(env, lines)


def test_a_random_mix_gives_the_replays_aggregates(env: Env) -> None:
    lines = [orjson.dumps(e) for e in random_events(1500, seed=14, customers=300)]
    run_one_worker(env, lines)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_bigger_random_mix_gives_the_replays_aggregates(env_factory: Any) -> None:
    env = env_factory(partitions=6)
    lines = [orjson.dumps(e) for e in random_events(10_000, seed=15, customers=2000)]
    run_one_worker(env, lines, timeout=400, idle=30)


def paused_partitions(w: Worker) -> set[int]:
    """The input partitions the worker's /metrics shows paused for alignment now."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return set()
    out = set()
    for family in text_string_to_metric_families(text):
        if family.name == "gateway_input_paused":
            out |= {int(s.labels["partition"]) for s in family.samples if s.value == 1}
    return out


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_worker_behind_on_a_backlog_reads_its_partitions_in_step(env_factory: Any) -> None:
    # Partition 1's customers act two days after partition 0's: read as fetched, it would
    # run days ahead in event time and the combiner would hold every window of those days
    # open for partition 0. Paused until partition 0 is no longer behind, it does not; and
    # what the agent gets is still exactly the replay's.
    env = env_factory(partitions=2)
    lines = []
    for e in random_events(10_000, seed=18, customers=1000):
        if subject_partition(e["subject"]["customer_id"], 2) == 1:
            at = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
            e["occurred_at"] = (at + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(orjson.dumps(e))
    want = replay_final(env, lines)
    # Published before the worker starts (both partitions are behind), on an input topic
    # of the deployment's partition count.
    ensure_topics(env.settings.bootstrap_servers, {env.settings.input_topic: 2})
    publish(env, lines)
    seen: set[int] = set()
    with Worker(env, extra_env={"GATEWAY_AGGREGATE_IDLE_SECONDS": "30"}) as w:
        deadline = time.monotonic() + 300
        while ((w.health() or {}).get("processed", 0)) < len(lines):
            assert time.monotonic() < deadline, w.log()
            seen |= paused_partitions(w)
            time.sleep(0.05)
        assert paused_partitions(w) == set()  # nothing is behind any more
        received = wait_equal(env, want, 300, [w])
    assert seen == {1}
    check_outputs(env, received, lines)


def holds_partition_0(w: Worker) -> bool:
    """Did the worker's latest assignment include subject partition 0?"""
    lines = [
        line
        for line in w.log_path.read_text(errors="replace").splitlines()
        if "consent state restored for partitions [" in line
    ]
    return bool(lines) and (" [0," in lines[-1] or " [0]" in lines[-1])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_and_a_sigkill_mid_window_give_the_replays_aggregates(
    env_factory: Any,
) -> None:
    env = env_factory(partitions=4)
    lines = [orjson.dumps(e) for e in random_events(4000, seed=16, customers=800)]
    want = replay_final(env, lines)
    # (unbuffered: the test reads who holds partition 0 from the logs)
    idle = {"GATEWAY_AGGREGATE_IDLE_SECONDS": "25", "PYTHONUNBUFFERED": "1"}
    a = Worker(env, extra_env=idle, log_name="a").start()
    b = Worker(env, extra_env={**idle, "GATEWAY_WEB_PORT": str(free_port())}, log_name="b").start()
    try:
        publish(env, lines[:2500])

        def processed() -> int:
            return sum((x.health() or {}).get("processed", 0) for x in (a, b))

        deadline = time.monotonic() + 120
        while processed() < 1200:
            assert time.monotonic() < deadline, a.log() + b.log()
            time.sleep(0.1)
        # Kill the worker running the combiner (the holder of partition 0): the
        # combiner restarts on the other from the aggregates topic; mid-window.
        victim = b if holds_partition_0(b) else a
        survivor = a if victim is b else b
        victim.kill()
        publish(env, lines[2500:])
        received = wait_equal(env, want, 300, [survivor, victim])
    finally:
        a.stop()
        b.stop()
    check_outputs(env, received, lines)
