"""The README's first command, as a new user runs it: `gateway demo` on the embedded
broker, then the disclosure log it leaves behind answers `gateway log` commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def gw(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_POLICY_PATH=str(ROOT / "agents.yaml"), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_demo_then_review_the_log(tmp_path: Path) -> None:
    r = gw("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = r.stdout
    assert "What each agent received" in out
    assert "prescriptions reached: Bob's → email" in out
    assert "reseller received: Lensworks Optical LLC" in out
    # Analytics receives aggregates only: it holds nothing about the erased subject.
    assert "erasure notices went to: email, payments, shipping" in out
    assert "What analytics received: aggregate tables only" in out
    assert "contributing customers" in out and "product_category" in out
    assert "dead-lettered: 2 bad event(s)" in out
    seconds = float(out.rsplit("demo finished in ", 1)[1].split("s", 1)[0])
    assert seconds < 60
    assert (tmp_path / ".gateway" / "ledger.db").exists()

    v = gw("log", "verify", cwd=tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "OK" in v.stdout

    rep = gw("log", "report", "subject", "C-1001", "--format", "json", cwd=tmp_path)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    report = orjson.loads(rep.stdout)
    text = rep.stdout
    # Alice's access request: who got her data, never the raw values themselves.
    for agent in ("shipping", "payments", "email", "analytics"):
        assert agent in text
    assert "Parcel Express Logistics LLC" in text
    assert "alice.moreno@example.com" not in text and "Moreno" not in text
    assert report
