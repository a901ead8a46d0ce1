"""The local stack's files and bookkeeping, without starting it: keys and reviewer password
made once, ports kept while free, recorded processes recognised only by their own
command line, stale state cleaned up."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.dev import stack
from gateway.dev.stack import Proc, StackPaths, absolute_ledger_url, alive, prepare, running
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings(tmp_path: Path) -> Settings:
    return Settings(
        policy_path=ROOT / "agents.yaml",
        keys_dir=tmp_path / ".gateway" / "keys",
        ledger_url=f"sqlite:///{tmp_path / 'ledger.db'}",
    )


def test_keys_and_password_are_made_once(tmp_path: Path) -> None:
    s = settings(tmp_path)
    paths = StackPaths.for_settings(s)
    assert paths.dir == (tmp_path / ".gateway" / "dev").absolute()
    first = prepare(s, paths)
    assert first.password is not None and len(first.password) >= 20
    assert any("gateway keys" in c for c in first.created)
    for f in (paths.password, paths.password_hash):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert paths.password_hash.read_text().startswith("scrypt$")
    assert first.password not in paths.password_hash.read_text()
    again = prepare(s, paths)
    assert again.password is None and again.created == []
    assert stack.reviewer_password(paths) == first.password
    assert again.ports == first.ports


def test_ports_of_the_last_run_are_kept_while_free(tmp_path: Path) -> None:
    s = settings(tmp_path)
    paths = StackPaths.for_settings(s)
    paths.dir.mkdir(parents=True)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        free = stack._any_free_port()
        paths.config.write_text(json.dumps({"broker": free, "worker": taken, "review": taken}))
        ports = stack._choose_ports(paths, s)
    assert ports["broker"] == free
    assert taken not in ports.values()
    assert len(set(ports.values())) == 3
    assert json.loads(paths.config.read_text()) == ports


def test_a_recorded_pid_counts_only_with_its_command_line() -> None:
    me = stack._cmdline(os.getpid())
    assert me
    assert alive(Proc(os.getpid(), me))
    assert not alive(Proc(os.getpid(), ["/usr/bin/something-else"]))
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert not alive(Proc(int(done.stdout), me))


def test_stale_state_is_cleaned_up_and_commands_say_nothing_runs(tmp_path: Path) -> None:
    s = settings(tmp_path)
    paths = StackPaths.for_settings(s)
    paths.dir.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    state = {
        "supervisor": {"pid": int(dead.stdout), "cmdline": ["python", "-m", "gateway.dev.stack"]},
        **{
            k: ""
            for k in (
                "bootstrap",
                "health_url",
                "review_url",
                "reviewer_user",
                "input_topic",
                "dead_letter_topic",
                "keys_dir",
                "gateway_public_key",
                "ledger_url",
                "logs",
                "env_file",
                "started_at",
            )
        },
        "topics": {},
        "agent_topics": {},
        "agent_private_keys": {},
        "publisher_keys": [],
    }
    paths.state.write_text(json.dumps(state))
    assert running(paths) is None
    assert not paths.state.exists()

    runner = CliRunner()
    args = ["--keys-dir", str(s.keys_dir)]
    r = runner.invoke(main, ["dev", "status", *args])
    assert r.exit_code == 1 and "No local stack is running" in r.output
    r = runner.invoke(main, ["dev", "status", "--format", "json", *args])
    assert json.loads(r.output) == {"running": False}
    r = runner.invoke(main, ["dev", "down", *args])
    assert r.exit_code == 0 and "No local stack is running." in r.output


def test_relative_sqlite_urls_become_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_ledger_url("sqlite:///.gateway/ledger.db") == (
        f"sqlite:///{tmp_path}/.gateway/ledger.db"
    )
    assert absolute_ledger_url("sqlite:////abs/l.db?timeout=5") == "sqlite:////abs/l.db?timeout=5"
    pg = "postgresql+psycopg://gw@db/gw"
    assert absolute_ledger_url(pg) == pg
