"""Faults on the real embedded broker, proved by reconciliation: killed workers, a broker
that goes away and comes back.

* Chaos: a steady stream is published while the gateway worker is SIGKILLed three times at
  random moments (each time mid-batch, after it made progress) and the ledger sink once;
  each is restarted. Then `gateway.audit` reconciles input, disclosure topic, agent topics,
  dead letters and ledger: zero lost events, zero unlogged disclosures, nothing pending.
* The same scenario with the ordering deliberately broken (agent messages disclosed before
  their records are logged, by the faulty worker of ``tests.stream.faulty_worker``) must
  make reconciliation report unlogged disclosures: the test can fail, and this proves it.
* Broker pause: the broker is frozen (SIGSTOP) for longer than every client timeout, then
  resumed; the same worker process carries on by itself and reconciliation is clean.

Both chaos runs widen the window between the two publishing steps of a batch (the faulty
worker's ``--pause-ms``) and make the first kill land inside it (the worker marks the
window with ``--pause-marker``; waiting for a random kill to hit it made the unsafe run
pass by luck now and then): the safe ordering must survive exactly where the unsafe one
breaks. The other kills come at random moments. The random seed is printed; set
GATEWAY_CHAOS_SEED to replay a run's schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import pytest

from gateway.audit import ReconcileReport, reconcile_deployment, reconcile_until_settled
from gateway.dev.broker import EmbeddedBroker
from gateway.dev.samples import random_events
from tests.stream.helpers import Env, Worker, free_port, wait_for

# Each test runs a worker for most of a minute (a paced stream, kills and restarts, a
# frozen broker): slow.
pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENTS = 3000
RATE = 150  # events per second: a steady stream over ~20 s
KILLS = 3
PHASE_DELAY_MS = 400


@dataclass
class Stream:
    """Publishes ``lines`` at a steady rate from a thread, as the order back end would."""

    env: Env
    lines: list[bytes]
    rate: float = RATE
    sent: int = 0
    error: BaseException | None = None
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Stream:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            chunk = 15
            with self.env.publisher() as pub:
                t0 = time.monotonic()
                for i in range(0, len(self.lines), chunk):
                    if self._stop.is_set():
                        return
                    for line in self.lines[i : i + chunk]:
                        pub.publish(line)
                    pub.flush()
                    self.sent = min(i + chunk, len(self.lines))
                    ahead = t0 + self.sent / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as e:  # reported by join()
            self.error = e

    @property
    def done(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def join(self, timeout: float = 120) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        self._stop.set()
        if self.error is not None:
            raise self.error
        assert self.sent == len(self.lines), f"published {self.sent} of {len(self.lines)}"


def seed() -> int:
    return int(os.environ.get("GATEWAY_CHAOS_SEED") or random.SystemRandom().randrange(10**6))


def processed(w: Worker) -> int:
    return int((w.health() or {}).get("processed", 0))


def settle(env: Env, wait: float = 150) -> ReconcileReport:
    """Reconcile until nothing is pending (the restarted worker has caught up)."""
    return reconcile_until_settled(
        lambda: reconcile_deployment(env.settings, pipeline=env.core.pipeline), wait
    )


@dataclass
class ChaosResult:
    seed: int
    kills: int
    sink_kills: int
    events: int
    report: ReconcileReport
    logs: list[Path]


def sink_env(env: Env) -> Env:
    """The same deployment as seen by the ledger sink process: its own health/metrics
    port (two workers on one host cannot share one)."""
    return replace(env, settings=env.settings.model_copy(update={"web_port": free_port()}))


def chaos(env: Env, faults: list[str], seed_: int) -> ChaosResult:
    rnd = random.Random(seed_)
    senv = sink_env(env)
    lines = [orjson.dumps(e) for e in random_events(EVENTS, seed=seed_ % 1000)]
    n = 0

    marker = env.dir / "in-publish-pause"

    def gateway() -> Worker:
        nonlocal n
        n += 1
        marker.unlink(missing_ok=True)  # left by a worker killed in its pause
        return Worker(
            env,
            role="gateway",
            faults=[*faults, "--pause-marker", str(marker)],
            log_name=f"gateway-{n}",
        )

    sink = Worker(senv, role="ledger", log_name="ledger-1").start()
    gw = gateway().start()
    assert (gw.health() or {}).get("roles") == ["gateway"]
    logs = [sink.log_path, gw.log_path]
    stream = Stream(env, lines).start()
    kills = sink_kills = 0
    sink_kill_after = rnd.randrange(KILLS)  # which gateway kill the sink kill follows
    try:
        for k in range(KILLS):
            # A random moment, but mid-stream: after the current worker has made progress.
            target = processed(gw) + rnd.randint(20, 200)
            wait_for(
                lambda t=target, w=gw: processed(w) >= t or stream.done,
                90,
                "progress before a kill",
            )
            if k == 0:
                # Between the batch's two publishing steps, with something disclosed.
                wait_for(marker.exists, 60, "a batch in its publish pause")
            else:
                time.sleep(rnd.uniform(0.0, 1.0))
            gw.kill()
            kills += 1
            if k == sink_kill_after:
                time.sleep(rnd.uniform(0.0, 1.0))
                sink.kill()
                sink_kills += 1
                sink = Worker(senv, role="ledger", log_name="ledger-2").start()
                logs.append(sink.log_path)
            gw = gateway().start()
            logs.append(gw.log_path)
        stream.join()
        return ChaosResult(seed_, kills, sink_kills, len(lines), settle(env), logs)
    finally:
        stream._stop.set()
        gw.stop()
        sink.stop()


def describe(r: ChaosResult) -> str:
    rep = r.report
    return (
        f"seed {r.seed}: {r.kills} gateway kills + {r.sink_kills} sink kill, {r.events} "
        f"events; summary {rep.summary()}, duplicates "
        f"{ {k: v for k, v in rep.duplicates.items() if v} }, re-issued {rep.reissued}; "
        f"gaps {[f.to_dict() for f in rep.gaps[:5]]}; "
        f"warnings {[f.to_dict() for f in rep.warnings[:5]]}"
    )


@pytest.fixture
def env(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Env:
    return Env.create(tmp_path, broker.bootstrap, topic_prefix, partitions=3, batch_max=200)


def test_killing_the_worker_loses_nothing_and_leaves_nothing_unlogged(
    env: Env, record_property: pytest.RecordProperty
) -> None:
    result = chaos(env, ["--pause-ms", str(PHASE_DELAY_MS)], seed())
    rep = result.report
    record_property("chaos", describe(result))
    print(describe(result))
    assert result.kills == KILLS and result.sink_kills == 1
    assert rep.counts["inputs"] == EVENTS and rep.counts["events"] == EVENTS
    assert not rep.gaps, describe(result)
    assert not rep.pending, describe(result)
    assert rep.of("lost") == [] and rep.of("unlogged") == [] and rep.of("unledgered") == []
    # Every expected disclosure reached its agent, every record the ledger.
    assert rep.counts["expected_messages"] > 0, (rep.counts, describe(result))
    assert rep.counts["ledger"] >= rep.counts["expected_records"]
    # Crashes mid-batch re-deliver: seen as duplicates, never as gaps.
    assert rep.duplicates["disclosure_topic"] > 0, describe(result)


def test_the_chaos_test_fails_when_messages_are_released_before_their_records(
    env: Env, record_property: pytest.RecordProperty
) -> None:
    # The deliberately broken ordering: a kill between "messages disclosed" and "records
    # logged" leaves messages whose bytes no record describes. Reconciliation must say so.
    result = chaos(env, ["--disclose-before-log", "--pause-ms", str(PHASE_DELAY_MS)], seed())
    record_property("chaos_unsafe", describe(result))
    print(describe(result))
    unlogged = result.report.of("unlogged")
    assert unlogged, "the broken ordering went unnoticed: " + describe(result)
    assert not result.report.ok()
    assert all("no record of these exact bytes" in f.what for f in unlogged)
    warned = any(
        "UNSAFE_RELEASE_BEFORE_LOG" in p.read_text(errors="replace")
        for p in result.logs
        if p.exists()
    )
    assert warned  # the switch announces itself in the worker's log


# --- the broker goes away and comes back ------------------------------------------------


@pytest.fixture
def paused_env(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Iterator[Env]:
    env = Env.create(tmp_path, broker.bootstrap, topic_prefix, partitions=3)
    try:
        yield env
    finally:
        if broker.paused:
            broker.resume()


# Client timeouts of the worker for this test (faust reads them from the environment):
# lowered from faust's defaults (90 s request, 20 min producer) so that a pause longer
# than all of them, and than the 6 s session timeout, fits in a CI run. faust refuses a
# request timeout below the session timeout, so 7 s is as low as they go; the pause
# outlasts them by 5 s, so a request sent just as the broker froze times out too.
CLIENT_TIMEOUT = 7
PAUSE = 12


def test_the_worker_waits_out_a_frozen_broker_and_carries_on(
    paused_env: Env, broker: EmbeddedBroker, record_property: pytest.RecordProperty
) -> None:
    env = paused_env
    lines = [orjson.dumps(e) for e in random_events(1200, seed=5)]
    timeouts = {
        "BROKER_REQUEST_TIMEOUT": str(CLIENT_TIMEOUT),
        "PRODUCER_REQUEST_TIMEOUT": str(CLIENT_TIMEOUT),
    }
    with Worker(env, extra_env=timeouts) as w:
        assert w.proc is not None
        pid = w.proc.pid
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines[:600], 1))
        wait_for(lambda: processed(w) > 50, 60, "some progress before the pause")
        broker.pause()
        t0 = time.monotonic()
        try:
            time.sleep(PAUSE)  # longer than the session and every client request timeout
            assert w.proc.poll() is None, "the worker gave up while the broker was away"
        finally:
            broker.resume()
        paused_for = time.monotonic() - t0
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines[600:], 601))
        rep = settle(env)
        assert w.proc.poll() is None and w.proc.pid == pid  # recovered by itself
        summary = (
            f"paused {paused_for:.0f}s (client timeouts {CLIENT_TIMEOUT}s, session 6s);"
            f" summary {rep.summary()}, duplicates "
            f"{ {k: v for k, v in rep.duplicates.items() if v} }"
        )
        record_property("pause", summary)
        print(summary)
        assert rep.counts["events"] == len(lines)
        assert not rep.gaps and not rep.pending, summary


STOP_TIMEOUT = 6


def test_a_worker_told_to_stop_while_the_broker_is_away_stops_and_loses_nothing(
    paused_env: Env, broker: EmbeddedBroker
) -> None:
    # faust's shutdown waits for the broker (the producer's flush, the last commit, leaving
    # the group), retrying for as long as it is away: such a worker never stopped. It
    # must stop within GATEWAY_STOP_TIMEOUT_SECONDS (and an orchestrator's grace period),
    # and what it had not finished is decided by the next worker.
    env = paused_env
    lines = [orjson.dumps(e) for e in random_events(1200, seed=6)]
    w = Worker(env, extra_env={"GATEWAY_STOP_TIMEOUT_SECONDS": str(STOP_TIMEOUT)}).start()
    assert w.proc is not None
    try:
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines[:600], 1))
        wait_for(lambda: processed(w) > 50, 60, "some progress before the broker goes away")
        broker.pause()
        t0 = time.monotonic()
        os.killpg(w.proc.pid, signal.SIGTERM)
        try:
            w.proc.wait(STOP_TIMEOUT + 15)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {time.monotonic() - t0:.0f} s after SIGTERM with the broker "
                f"away:\n{w.log()}"
            ) from None
    finally:
        w.kill()
        if broker.paused:
            broker.resume()
    with Worker(env):
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines[600:], 601))
        rep = settle(env)
    assert rep.counts["events"] == len(lines)
    assert not rep.gaps and not rep.pending, rep.summary()
