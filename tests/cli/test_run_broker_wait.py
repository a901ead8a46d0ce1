"""`gateway run` against a broker that is not there says so within seconds, and keeps
saying what it waits for (issue 11: it used to sit silent for 120 s)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.dev.broker import EmbeddedBroker, free_port


def test_run_says_what_it_waits_for(tmp_path: Path) -> None:
    # Nothing listens on a port just found free.
    bootstrap = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "GATEWAY_BOOTSTRAP_SERVERS": bootstrap,
        "GATEWAY_KEYS_DIR": str(tmp_path / "keys"),
        "GATEWAY_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--role", "ledger"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put((time.monotonic() - started, line.rstrip()))

    threading.Thread(target=read, daemon=True).start()
    got: list[tuple[float, str]] = []

    def until(text: str, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len([1 for _, line in got if text in line]) < count:
            try:
                got.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                return

    try:
        until("waiting for the Kafka broker", 2, 15)
        # The broker comes: the worker says so and starts.
        with EmbeddedBroker(port=int(bootstrap.rsplit(":", 1)[1])):
            until("answers; starting the ledger worker", 1, 30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    waits = [(t, line) for t, line in got if "waiting for the Kafka broker" in line]
    assert len(waits) >= 2, got
    first_at, first = waits[0]
    # Within seconds of starting: the first probe's answer (about 1 s on an idle machine,
    # most of it the interpreter and imports; more on a busy one), not after 120 s.
    assert first_at < 10, got
    assert f"at {bootstrap} (unreachable: connection refused)" in first
    assert "is it running?" in first and "GATEWAY_BOOTSTRAP_SERVERS" in first
    # And again while it keeps waiting, about every 5 s.
    assert 3 < waits[1][0] - first_at < 8, got
    starting = [line for _, line in got if "answers; starting the ledger worker" in line]
    assert starting and "/health/ready" in starting[0], got
