"""Helpers for integration tests against the embedded broker: an isolated policy/topic set
per test, a gateway worker subprocess, and reading topics back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.consent import ConsentState
from gateway.dev.broker import free_port
from gateway.kafka.read import read_decision_records, read_topic
from gateway.pipeline import EventResult
from gateway.policy import Policy, load_policy
from gateway.records import DecisionRecord
from gateway.runtime import Core, build_core, demo_signers, ensure_demo_keys
from gateway.sdk.publisher import Publisher
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

# How long a topic read waits for more after reaching the end offsets. The tests read
# outputs the broker has already acknowledged (a worker counts an event processed only
# after that), so nothing is still arriving; read_topic's 1 s is for topics being written.
READ_QUIET = 0.25


@dataclass
class Env:
    """One isolated gateway deployment on the shared broker: own topics, keys, ledger."""

    settings: Settings
    policy: Policy
    core: Core
    dir: Path

    @classmethod
    def create(
        cls, tmp: Path, bootstrap: str, prefix: str, partitions: int = 3, **overrides: Any
    ) -> Env:
        text = (
            (ROOT / "agents.yaml").read_text().replace("topic: agent.", f"topic: {prefix}.agent.")
        )
        (tmp / "agents.yaml").write_text(text)
        settings = Settings(
            policy_path=tmp / "agents.yaml",
            keys_dir=tmp / "keys",
            bootstrap_servers=bootstrap,
            input_topic=f"{prefix}.events",
            disclosure_topic=f"{prefix}.disclosures",
            dead_letter_topic=f"{prefix}.dead",
            subjects_topic=f"{prefix}.subjects",
            app_id=f"{prefix}-gw",
            partitions=partitions,
            web_port=free_port(),
            ledger_url=f"sqlite:///{tmp / 'ledger.db'}",
            **overrides,
        )
        policy = load_policy(settings.policy_path)
        ensure_demo_keys(settings, policy)
        return cls(settings, policy, build_core(settings, policy), tmp)

    def publisher(self, **producer_config: Any) -> Publisher:
        """An SDK publisher to this deployment's input topic that signs each event as the
        demo publisher the policy allows to send its type."""
        return Publisher(
            self.settings.bootstrap_servers,
            self.settings.input_topic,
            signers=demo_signers(self.settings, self.policy),
            **producer_config,
        )

    def signed_headers(self, value: bytes) -> list[tuple[str, bytes]]:
        """The publisher headers for ``value`` (an event), as its demo publisher signs it."""
        event_type = orjson.loads(value)["event_type"]
        return demo_signers(self.settings, self.policy)[event_type].headers(value)

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.settings.as_env()}

    def expected(self, lines: list[bytes]) -> list[EventResult]:
        """What the offline core decides for these lines, in order (per-customer order is
        all that matters, and the stream keeps it)."""
        states: dict[str, ConsentState] = {}
        return [self.core.pipeline.process(raw, states, verify=False) for raw in lines]

    def expected_with_notices(self, lines: list[bytes]) -> list[EventResult]:
        """:meth:`expected`, with each erasure request answered by its notices (records
        and messages) as the ledger sink answers it, from the records so far."""
        states: dict[str, ConsentState] = {}
        log: list[DecisionRecord] = []
        out = []
        for raw in lines:
            got = self.core.pipeline.process(raw, states, verify=False)
            log += got.records
            if got.erasure_request is not None:
                notices = self.core.pipeline.erasure_outputs(got.erasure_request, log)
                log += notices.records
                got.records += notices.records
                got.messages += notices.messages
            out.append(got)
        return out

    def ledger_records(self) -> list[DecisionRecord]:
        """What the ledger holds now."""
        from gateway.ledger import list_records, open_store

        with open_store(self.settings.ledger_url, create=False) as store:
            return list(list_records(store, limit=None))

    def records(self) -> list[DecisionRecord]:
        return read_decision_records(
            self.settings.bootstrap_servers, self.settings.disclosure_topic, quiet=READ_QUIET
        )

    def topic(self, name: str) -> list[tuple[str, bytes, bytes | None]]:
        return read_topic(self.settings.bootstrap_servers, name, quiet=READ_QUIET)

    def agent_topic(self, agent: str) -> str:
        return self.policy.agents[agent].topic


class Worker:
    """A `gateway run` subprocess; with ``faults``, a worker with a deliberately faulty
    batch protocol instead (``tests.stream.faulty_worker``, given these arguments)."""

    def __init__(
        self,
        env: Env,
        *,
        role: str = "all",
        extra_env: dict[str, str] | None = None,
        log_name: str = "worker",
        faults: Sequence[str] | None = None,
    ):
        self.env = env
        self.role = role
        self.extra_env = extra_env or {}
        self.log_path = env.dir / f"{log_name}.log"
        self.faults = faults
        self.port = int(self.extra_env.get("GATEWAY_WEB_PORT", env.settings.web_port))
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The worker's command line and environment."""
        env = {**self.env.env(), **self.extra_env}
        if self.faults is None:
            return [sys.executable, "-m", "gateway", "run", "--role", self.role], env
        # The tests package is not installed: the worker finds it from the repository.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        args = ["--role", self.role, *self.faults]
        return [sys.executable, "-m", "tests.stream.faulty_worker", *args], env

    def start(self, timeout: float = 60) -> Worker:
        argv, env = self.command()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.env.dir,
            )
        deadline = time.monotonic() + timeout
        while self.health() is None:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker did not come up:\n{self.log()}")
            time.sleep(0.2)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def health(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/health"
            with urllib.request.urlopen(url, timeout=1) as r:
                return orjson.loads(r.read())  # type: ignore[no-any-return]
        except OSError:
            return None

    def wait_processed(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            h = self.health() or {}
            if h.get("processed", 0) >= n:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker died:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"processed {h.get('processed')} of {n}:\n{self.log()}")
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)
