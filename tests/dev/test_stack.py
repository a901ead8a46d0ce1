"""`gateway dev up / status / down` as a developer runs them: a stack in the background
that an agent can read from, credentials that work, state that survives a restart."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.dev.stack import Proc, StackPaths, alive, read_state, stop
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "gateway" / "data" / "sample_events.jsonl"

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A project directory whose stack uses free ports (the ports of a previous run are
    reused, so they are written where the stack keeps them), stopped at the end."""
    dev = tmp_path / ".gateway" / "dev"
    dev.mkdir(parents=True)
    ports = {"broker": _free_port(), "worker": _free_port(), "review": _free_port()}
    (dev / "stack.json").write_text(json.dumps(ports))
    yield tmp_path
    stop(StackPaths(dev))


def gw(
    *args: str, cwd: Path, timeout: float = 150, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    base.update(GATEWAY_POLICY_PATH=str(ROOT / "agents.yaml"), COLUMNS="200", **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=base,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status(cwd: Path, *extra: str) -> dict[str, Any]:
    r = gw("dev", "status", "--format", "json", *extra, cwd=cwd)
    return dict(orjson.loads(r.stdout))


def login(review_url: str, user: str, password: str) -> bool:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(review_url + "login", timeout=10) as r:
        form = r.read().decode()
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', form))
    fields.update(username=user, password=password)
    req = urllib.request.Request(
        review_url + "login",
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Origin": review_url.rstrip("/")},
    )
    try:
        with opener.open(req, timeout=30) as r:
            return "logout" in r.read().decode().lower()
    except urllib.error.HTTPError:
        return False


def test_up_publish_consume_down_up(project: Path) -> None:
    started = time.monotonic()
    r = gw("dev", "up", cwd=project)
    up_seconds = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    st = status(project, "--show-password")
    assert st["running"] and all(st["parts"].values()), st
    assert set(st["parts"]) == {"supervisor", "broker", "worker", "review"}
    password = st["reviewer_password"]
    # What `up` printed: address, topics, keys, review page and the password, once.
    assert f"Kafka bootstrap   {st['bootstrap']}" in out
    assert "Publish to        gateway.events" in out and "agent.shipping (shipping)" in out
    assert "gateway.deadletter" in out and "start empty on every `gateway dev up`" in out
    assert st["review_url"] in out and "user            reviewer" in out
    assert f"password        {password}  (shown once" in out
    assert len(password) >= 20
    keys = project / ".gateway" / "keys"
    assert str(keys / "gateway-signing.pub") in out
    shipping_key = Path(st["agent_private_keys"]["shipping"])
    assert str(shipping_key) in out and shipping_key.exists()
    pw_file = project / ".gateway" / "dev" / "reviewer.password"
    assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
    assert password not in (project / ".gateway" / "dev" / "state.json").read_text()
    assert login(st["review_url"], "reviewer", password)
    assert not login(st["review_url"], "reviewer", password + "x")

    # A developer's first message: publish one order, read it as the shipping agent.
    # As `. .gateway/dev/env` sets them: the broker, and the demo publishers' keys.
    env = {
        "GATEWAY_BOOTSTRAP_SERVERS": st["bootstrap"],
        "GATEWAY_PUBLISHER_KEYS": str(project / ".gateway" / "publisher-keys"),
    }
    assert f"GATEWAY_PUBLISHER_KEYS={env['GATEWAY_PUBLISHER_KEYS']}" in Path(
        st["env_file"]
    ).read_text().replace("'", "")
    order = next(ln for ln in SAMPLE.read_text().splitlines() if '"order.placed"' in ln)
    (project / "order.jsonl").write_text(order + "\n")
    t0 = time.monotonic()
    assert gw("publish", "order.jsonl", cwd=project, env=env).returncode == 0
    c = gw(
        "agent",
        "consume",
        "shipping",
        "--key",
        str(shipping_key),
        "--gateway-key",
        str(keys / "gateway-signing.pub"),
        "--max",
        "1",
        cwd=project,
        env=env,
    )
    first_message = time.monotonic() - t0
    assert c.returncode == 0, c.stderr
    (got,) = [orjson.loads(line) for line in c.stdout.splitlines()]
    assert got["payload"]["event_type"] == "order.placed"
    print(f"dev up: {up_seconds:.1f}s; publish to first message read: {first_message:.1f}s")

    r = gw("dev", "down", cwd=project)
    assert r.returncode == 0 and "Stopped the local stack" in r.stdout, r.stdout + r.stderr
    procs = [Proc(**st["supervisor"]), *(Proc(**p) for p in st["processes"].values())]
    assert not any(alive(p) for p in procs)
    after = status(project)
    assert after == {"running": False}
    assert gw("dev", "status", cwd=project).returncode == 1

    # Again: the same keys, password and ledger (the broker starts empty).
    pub = (keys / "gateway-signing.pub").read_bytes()
    r = gw("dev", "up", cwd=project)
    assert r.returncode == 0, r.stdout + r.stderr
    assert password not in r.stdout and "created" not in r.stdout
    assert "--show-password" in r.stdout
    assert (keys / "gateway-signing.pub").read_bytes() == pub
    st2 = status(project, "--show-password")
    assert st2["reviewer_password"] == password
    assert login(st2["review_url"], "reviewer", password)
    ledger = gw("log", "list", "--format", "json", cwd=project, env=env)
    assert ledger.returncode == 0, ledger.stderr
    assert any(r["agent"] == "shipping" for r in orjson.loads(ledger.stdout))
    assert gw("dev", "down", cwd=project).returncode == 0


def test_foreground_until_ctrl_c(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_POLICY_PATH=str(ROOT / "agents.yaml"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "dev", "up", "--foreground"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops the stack." in line:
                break
        assert any("Local gateway stack ready" in ln for ln in lines), "".join(lines)
        paths = StackPaths.for_settings(Settings(keys_dir=project / ".gateway" / "keys"))
        state = read_state(paths)
        assert state is not None and state.status == "ready"
        assert gw("dev", "status", cwd=project).returncode == 0
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, rest
        assert "stopped" in rest
        assert read_state(paths) is None
        assert not any(alive(p) for p in [state.supervisor, *state.processes.values()])
    finally:
        if proc.poll() is None:
            proc.kill()
