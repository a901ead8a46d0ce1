"""What the benchmark runs on: isolated deployments on one broker, worker subprocesses that
can be watched (progress, RSS), fast topic filling and reading topics to the end.

Every program under test runs in its own process, so each gets a core to itself (the
machine this was written on has two: one for it, one for the broker) and its memory can
be read from ``/proc``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from gateway.dev.broker import free_port
from gateway.kafka.admin import ensure_topics
from gateway.kafka.clients import AIOKAFKA_PRODUCER_DEFAULTS
from gateway.policy import Policy, load_policy
from gateway.publishers import PublisherSigner
from gateway.runtime import Core, build_core, demo_signers, ensure_demo_keys
from gateway.settings import Settings
from gateway.stream.worker import required_topics

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_POLICY = ROOT / "agents.yaml"


def proc_memory(pid: int) -> dict[str, int]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, in bytes (Linux)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0]) * 1024
    except OSError:
        return {}
    return {"rss": out.get("VmRSS", 0), "peak_rss": out.get("VmHWM", 0)}


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- policies -----------------------------------------------------------------------------


def policy_text(prefix: str, agents: int | None = None, source: Path = DEFAULT_POLICY) -> str:
    """The default policy with its agent topics moved under ``prefix``.

    ``agents`` keeps the first N agents, or (above the default five) adds copies of them
    (``shipping-2``...: same rules, own topic and key), to see how cost grows with agents.
    """
    data = yaml.safe_load(source.read_text())
    base = dict(data["agents"])
    chosen: dict[str, Any] = {}
    want = len(base) if agents is None else agents
    copy = 1
    while len(chosen) < want:
        for name, spec in base.items():
            if len(chosen) >= want:
                break
            new = name if copy == 1 else f"{name}-{copy}"
            spec = dict(spec)
            spec["topic"] = f"{prefix}.agent.{new}"
            spec["public_key"] = f"agents/{new}.pub"
            chosen[new] = spec
        copy += 1
    data["agents"] = chosen
    return yaml.safe_dump(data, sort_keys=False)


# --- deployments --------------------------------------------------------------------------


@dataclass
class Deployment:
    """One gateway deployment on the shared broker: own policy file, topics, consumer
    group; keys are shared by the whole run (agent key pairs are made once)."""

    name: str
    dir: Path
    settings: Settings

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.settings.policy_path)

    @cached_property
    def core(self) -> Core:
        return build_core(self.settings, self.policy)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.as_env()}

    def ensure_topics(self) -> None:
        ensure_topics(self.settings.bootstrap_servers, required_topics(self.settings, self.core))

    def agent_topics(self) -> list[str]:
        return [a.topic for a in self.policy.agents.values()]


@dataclass
class Workspace:
    root: Path
    bootstrap: str
    _n: int = 0

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @cached_property
    def _signers(self) -> dict[str, PublisherSigner]:
        # The demo publishers' keys of this run's key store (made once, like the agents').
        settings = Settings(policy_path=DEFAULT_POLICY, keys_dir=self.keys_dir)
        policy = load_policy(settings.policy_path)
        ensure_demo_keys(settings, policy)
        return demo_signers(settings, policy)

    def sign(self, value: bytes) -> list[tuple[str, bytes]]:
        """The headers the demo publisher of ``value``'s event type signs it with: the
        bench publishes as the real publishers do, so the gateway's signature check is
        part of what is measured."""
        return self._signers[orjson.loads(value)["event_type"]].headers(value)

    def deployment(
        self,
        name: str,
        *,
        input_topic: str,
        partitions: int = 4,
        agents: int | None = None,
        **overrides: Any,
    ) -> Deployment:
        self._n += 1
        prefix = f"bench-{name}-{self._n}"
        d = self.root / prefix
        d.mkdir(parents=True, exist_ok=True)
        (d / "agents.yaml").write_text(policy_text(prefix, agents))
        settings = Settings(
            policy_path=d / "agents.yaml",
            keys_dir=self.keys_dir,
            bootstrap_servers=self.bootstrap,
            input_topic=input_topic,
            disclosure_topic=f"{prefix}.disclosures",
            dead_letter_topic=f"{prefix}.dead",
            subjects_topic=f"{prefix}.subjects",
            app_id=f"{prefix}-gw",
            partitions=partitions,
            web_port=free_port(),
            ledger_url=f"sqlite:///{d / 'ledger.db'}",
            **overrides,
        )
        dep = Deployment(prefix, d, settings)
        ensure_demo_keys(settings, dep.policy)
        return dep


# --- processes ----------------------------------------------------------------------------


@dataclass
class Progress:
    """(monotonic time, events processed) samples of one run."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def rate(self, start_at: int = 0) -> float:
        """Events per second from the first sample showing progress beyond ``start_at``
        to the last, so start-up (group join, first fetch) is not counted."""
        moving = [(t, n) for t, n in self.samples if n > start_at]
        if len(moving) < 2:
            return 0.0
        (t0, n0), (t1, n1) = moving[0], moving[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


class Process:
    """A program under test, in its own process group, logging to a file."""

    def __init__(self, args: Sequence[str], *, env: dict[str, str], cwd: Path, log: Path):
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def memory(self) -> dict[str, int]:
        return proc_memory(self.pid) if self.alive() else {}

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid) if self.alive() else 0.0

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.args[2:5]} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, grace: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(grace)


class GatewayWorker(Process):
    """``gateway run --role gateway``: the real worker, watched through its /health page."""

    def __init__(
        self,
        dep: Deployment,
        *,
        log_name: str = "worker",
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ):
        env = {**dep.env(), **(extra_env or {})}
        if port is not None:
            env["GATEWAY_WEB_PORT"] = str(port)
        self.port = int(env["GATEWAY_WEB_PORT"])
        # The default log level (info): see baselines._run_faust on "warning".
        super().__init__(
            [sys.executable, "-m", "gateway", "run", "--role", "gateway"],
            env=env,
            cwd=dep.dir,
            log=dep.dir / f"{log_name}.log",
        )

    def health(self) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return orjson.loads(r.read())
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """The worker's Prometheus samples, by name and labels (``name{k=v}``)."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
                if "le" not in s.labels:
                    out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def processed(self) -> int:
        return int((self.health() or {}).get("processed", 0))

    def wait_up(self, timeout: float = 90) -> GatewayWorker:
        deadline = time.monotonic() + timeout
        while self.health() is None:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker did not come up:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def track(
        self,
        target: int,
        timeout: float,
        *,
        interval: float = 0.05,
        progress: Progress | None = None,
        on_sample: Callable[[float, int], None] | None = None,
    ) -> Progress:
        """Poll until ``processed`` reaches ``target``; the samples give the rate."""
        progress = progress or Progress()
        deadline = time.monotonic() + timeout
        while True:
            n = self.processed()
            now = time.monotonic()
            progress.samples.append((now, n))
            if on_sample is not None:
                on_sample(now, n)
            if n >= target:
                return progress
            self.check()
            if now > deadline:
                raise RuntimeError(
                    f"worker processed {n} of {target} events in "
                    f"{timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(interval)


# --- topics -------------------------------------------------------------------------------


async def fill_topic(
    bootstrap: str,
    topic: str,
    items: Iterable[tuple[bytes, bytes]],
    *,
    chunk: int = 20_000,
    rate: float | None = None,
    sign: Callable[[bytes], list[tuple[str, bytes]]] | None = None,
    misroute: bool = False,
) -> tuple[int, int]:
    """Publish (key, value) pairs as fast as the client allows (or at ``rate`` per
    second): hand-built batches per partition, partitioned like every other Kafka client
    (murmur2 of the key), so each customer's events land on one partition in order --
    or, with ``misroute``, on the next partition, as a client with another partitioner
    would (every event then takes the gateway's re-routing hop). ``sign`` gives each
    value's publisher headers. Returns (count, bytes)."""
    # Large batches: a bulk load, and few record batches per partition -- Tansu scans
    # them on every fetch (see Settings.fetch_max_wait_ms).
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
        **AIOKAFKA_PRODUCER_DEFAULTS,
    )
    await producer.start()
    count = size = 0
    if rate is not None:
        chunk = max(1, int(rate / 20))  # a burst every 50 ms
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        parts = sorted(await producer.partitions_for(topic))
        partitioner = DefaultPartitioner()
        pending: list[asyncio.Future[Any]] = []
        batches: dict[int, Any] = {}

        async def flush(p: int) -> None:
            b = batches.pop(p)
            b.close()
            pending.append(await producer.send_batch(b, topic, partition=p))

        for key, value in items:
            p = partitioner(key, parts, parts)
            if misroute:
                p = parts[(parts.index(p) + 1) % len(parts)]
            headers = sign(value) if sign is not None else None
            b = batches.get(p)
            if b is None:
                b = batches[p] = producer.create_batch()
            if b.append(key=key, value=value, timestamp=None, headers=headers) is None:
                await flush(p)
                b = batches[p] = producer.create_batch()
                b.append(key=key, value=value, timestamp=None, headers=headers)
            count += 1
            size += len(value)
            if rate is not None and count % chunk == 0:
                for p in list(batches):
                    await flush(p)
                await asyncio.sleep(max(0.0, started + count / rate - loop.time()))
            if len(pending) >= 64 or count % chunk == 0:
                # Bounded in flight: a million events are not all held at once.
                await asyncio.gather(*pending)
                pending.clear()
        for p in list(batches):
            await flush(p)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return count, size


def event_items(events: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, bytes]]:
    for e in events:
        yield e["subject"]["customer_id"].encode(), orjson.dumps(e)


async def read_to_end(
    bootstrap: str, topics: Sequence[str], *, quiet: float = 1.0, timeout: float = 300.0
) -> dict[str, list[Any]]:
    """Every record now on ``topics``, by topic. Fetches until nothing more arrives for
    ``quiet`` seconds: Tansu's ListOffsets under-reports the log end (see gateway.kafka.admin),
    so end offsets cannot tell when to stop."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    out: dict[str, list[Any]] = {t: [] for t in topics}
    try:
        await consumer.topics()  # a metadata refresh (does not auto-create topics)
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        last = start = loop.time()
        while loop.time() - last < quiet and loop.time() - start < timeout:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, records in batch.items():
                out[tp.topic].extend(records)
            if batch:
                last = loop.time()
    finally:
        await consumer.stop()
    return out
