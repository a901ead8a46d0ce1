"""Helpers for the command-line tests: the installed `gateway` command run as a user runs
it, and a ledger built from realistic records for `gateway log`."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result

from gateway.cli.log import log
from gateway.keys import init_gateway_keys, load_signing_key
from gateway.ledger.store import open_store
from gateway.records import DecisionRecord
from tests.ledger.data import MASTER, make_records

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "gateway" / "data" / "sample_events.jsonl"
GATEWAY = [sys.executable, "-m", "gateway"]


def gw(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GATEWAY_KEYS_DIR": str(cwd / "keys"),
        "GATEWAY_POLICY_PATH": str(ROOT / "agents.yaml"),
        "COLUMNS": "200",
    }
    r = subprocess.run(
        [*GATEWAY, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


@dataclass
class Env:
    url: str
    keys: Path
    records: list[DecisionRecord]
    tmp: Path

    def run(self, *args: str, db: bool = True, input: str | None = None) -> Result:
        extra = ["--db", self.url, "--keys-dir", str(self.keys)] if db else []
        runner = CliRunner(env={"COLUMNS": "240"})
        return runner.invoke(log, [*args, *extra], input=input, catch_exceptions=False)


def _keys(tmp: Path) -> Path:
    keys = tmp / "keys"
    init_gateway_keys(keys)
    # The records' subject refs were made with the test pseudonym key: use it here too.
    os.remove(keys / "pseudonym.key")
    fd = os.open(keys / "pseudonym.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(MASTER.hex())
    return keys


def build_log_env(url: str, tmp: Path) -> Env:
    keys = _keys(tmp)
    records = make_records(90, seed=5)
    with open_store(
        url, signer=load_signing_key(keys / "gateway-signing.key"), checkpoint_every=60
    ) as s:
        s.append(records[:50], shard=0)
        s.append(records[50:], shard=1)
    return Env(url, keys, records, tmp)
