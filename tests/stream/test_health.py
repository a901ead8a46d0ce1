"""The worker's health pages on the real embedded broker: live and ready apart, the sink's
lag, and a stalled sink reported unhealthy (issue 11, items 5 and 6)."""

from __future__ import annotations

import re
import sqlite3
import time
import urllib.error
import urllib.request
from typing import Any

import orjson
import pytest
from kafka import KafkaProducer

from gateway.dev.samples import scenario
from gateway.integrity import HEADER_MAC, WorkerMac
from gateway.ledger import open_store
from gateway.sdk.publisher import PRODUCER_DEFAULTS
from tests.stream.helpers import Env, Worker, wait_for

pytestmark = pytest.mark.broker


def get(env: Env, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{env.settings.web_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())


def metrics_text(env: Env) -> str:
    url = f"http://127.0.0.1:{env.settings.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def until_status(env: Env, path: str, status: int, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = get(env, path)
        if code == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} still {code} after {timeout} s: {body}")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_gateway_worker_is_live_then_ready_once_its_consent_state_is_restored(
    env: Env,
) -> None:
    with Worker(env, role="gateway"):
        code, live = get(env, "/health/live")
        assert code == 200 and live["live"] is True and live["crashed"] is False
        ready = until_status(env, "/health/ready", 200, 60)
        checks = ready["checks"]
        assert ready["ready"] is True and ready["roles"] == ["gateway"]
        assert checks["group_joined"] is True and checks["rebalancing"] is False
        # One worker: every input partition is its, each with its consent state restored.
        assert checks["input_partitions"] == list(range(env.settings.partitions))
        assert checks["consent_restored"] is True
        code, summary = get(env, "/health")
        assert code == 200 and summary["status"] == "ok" and summary["ready"] is True
        assert "sink" not in summary


@pytest.mark.slow
def test_a_stalled_sink_is_unhealthy_and_recovers(env: Env) -> None:
    """The store taken away from the sink (a write lock held on the SQLite ledger) while
    records wait: after GATEWAY_SINK_STALL_SECONDS the sink is stalled, /health/ready and
    /health answer 503 with the lag, /health/live stays 200; once the lock goes, the
    records are logged and the worker is ready again."""
    lines = [orjson.dumps(e) for e in scenario()][:6]
    good = [r for out in env.expected(lines) for r in out.records]
    mac = WorkerMac(env.core.worker_key)
    with Worker(env, role="ledger", extra_env={"GATEWAY_SINK_STALL_SECONDS": "2"}):
        ready = until_status(env, "/health/ready", 200, 60)
        assert ready["checks"]["sink_consuming"] is True
        assert ready["checks"]["disclosure_partitions"] == list(range(env.settings.partitions))
        db = env.settings.ledger_url.removeprefix("sqlite:///")
        lock = sqlite3.connect(db, isolation_level=None, timeout=30)
        lock.execute("BEGIN IMMEDIATE")  # no other writer until released
        try:
            p = KafkaProducer(
                bootstrap_servers=[env.settings.bootstrap_servers], **PRODUCER_DEFAULTS
            )
            for r in good:
                value = r.to_json()
                p.send(
                    env.settings.disclosure_topic, value, b"ref", [(HEADER_MAC, mac.record(value))]
                )
            p.flush()
            p.close()
            body = until_status(env, "/health/ready", 503, 30)
            assert body["ready"] is False and body["checks"]["sink_stalled"] is True
            code, summary = get(env, "/health")
            assert code == 503 and summary["status"] == "stalled"
            assert summary["sink"]["stalled"] is True
            assert summary["sink"]["lag"] == len(good)
            # Stalled means more than 2 s without progress; the page rounds to 0.1 s.
            assert summary["sink"]["seconds_since_progress"] >= 2
            code, live = get(env, "/health/live")
            assert code == 200 and live["live"] is True  # stalled is not dead
            text = metrics_text(env)
            assert re.search(r"^gateway_ledger_sink_stalled 1\.0$", text, re.M)
            lag = sum(
                float(v)
                for v in re.findall(r"^gateway_ledger_sink_lag\{[^}]*\} (\S+)$", text, re.M)
            )
            assert lag == len(good)
        finally:
            lock.rollback()
            lock.close()
        until_status(env, "/health/ready", 200, 60)
        wait_for(lambda: (get(env, "/health")[1].get("sink") or {}).get("lag") == 0, 30, "lag 0")
        with open_store(env.settings.ledger_url, create=False) as store:
            assert store.count() == len(good)
        code, summary = get(env, "/health")
        assert code == 200 and summary["status"] == "ok"
        assert re.search(r"^gateway_ledger_sink_stalled 0\.0$", metrics_text(env), re.M)
