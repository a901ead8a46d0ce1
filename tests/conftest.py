"""Shared fixtures: the default policy, a key store, the assembled core, and helpers to read
what an agent would receive."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.keys import demo_agent_private_key
from gateway.pipeline import EventResult
from gateway.policy import Policy, load_policy
from gateway.records import DecisionRecord
from gateway.runtime import Core, build_core, ensure_demo_keys
from gateway.sdk.reader import AgentReader
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.broker_plugin"]


@pytest.fixture(autouse=True)
def _no_inherited_terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI lays tables out to COLUMNS when it is set. pytest-xdist's workers get
    # COLUMNS=80 and LINES=24, which would squeeze every table the CLI tests read; a test
    # that wants a width sets it itself.
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="session")
def policy() -> Policy:
    return load_policy(ROOT / "agents.yaml")


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    d = tmp_path_factory.mktemp("gw")
    return Settings(
        policy_path=ROOT / "agents.yaml",
        keys_dir=d / "keys",
        ledger_url=f"sqlite:///{d / 'ledger.db'}",
    )


@pytest.fixture(scope="session")
def core(settings: Settings, policy: Policy) -> Core:
    ensure_demo_keys(settings, policy)
    return build_core(settings, policy)


@pytest.fixture(scope="session")
def readers(core: Core, settings: Settings) -> dict[str, AgentReader]:
    return {
        name: AgentReader(
            name, demo_agent_private_key(settings.keys_dir, name), settings.signing_public_key_path
        )
        for name in core.policy.agents
    }


def event(
    etype: str, data: dict[str, Any], *, customer: str = "C-1", stype: str = "consumer", n: int = 0
) -> dict[str, Any]:
    return {
        # Event ids are operational data sent to agents: never build them from PI.
        "event_id": f"evt-{etype}-{n:04d}-{hashlib.sha256(customer.encode()).hexdigest()[:8]}",
        "event_type": etype,
        "schema_version": 1,
        "occurred_at": "2026-05-04T10:00:00Z",
        "subject": {"customer_id": customer, "type": stype},
        "data": data,
    }


@pytest.fixture
def sample() -> dict[str, dict[str, Any]]:
    """One event of each type from the bundled scenario, by type (first occurrence)."""
    out: dict[str, dict[str, Any]] = {}
    for e in scenario():
        out.setdefault(e["event_type"], e)
    return copy.deepcopy(out)


class Run:
    """Drive the offline core over events with one consent-state dict, as the replay does
    (a subject's erasure request answered at once with the notices built from the records
    made so far), and open what agents got."""

    def __init__(self, core: Core, readers: dict[str, AgentReader]):
        self.core = core
        self.readers = readers
        self.states: dict[str, ConsentState] = {}
        self.outcomes: list[EventResult] = []
        self.log: list[DecisionRecord] = []

    def send(self, ev: dict[str, Any] | bytes) -> EventResult:
        raw = ev if isinstance(ev, bytes) else orjson.dumps(ev)
        out = self.core.pipeline.process(raw, self.states, verify=False)
        self.log.extend(out.records)
        if out.erasure_request is not None:
            notices = self.core.pipeline.erasure_outputs(out.erasure_request, self.log)
            self.log.extend(notices.records)
            out.records.extend(notices.records)
            out.messages.extend(notices.messages)
        self.outcomes.append(out)
        return out

    def received(self, out: EventResult, agent: str) -> dict[str, Any] | None:
        """The decrypted payload ``agent`` got from ``out``, or None."""
        for m in out.messages:
            if m.agent == agent:
                return self.readers[agent].opener.open(m.value).json()
        return None

    def record(self, out: EventResult, agent: str) -> Any:
        (rec,) = [r for r in out.records if r.agent == agent]
        return rec


@pytest.fixture
def run(core: Core, readers: dict[str, AgentReader]) -> Run:
    return Run(core, readers)


def walk_values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in walk_values(x)]
    if isinstance(obj, list):
        return [v for x in obj for v in walk_values(x)]
    return [obj]


Finder = Callable[[Any], list[Any]]


def with_aggregates(
    core: Core, events: list[dict[str, Any]], states: dict[str, ConsentState] | None = None
) -> list[EventResult]:
    """``events`` through the core as the replay runs them, aggregate agents included: each
    event's result, then (as its own result) every aggregate table that became due, sealed
    with its ``aggregated`` record; every window closed at the end."""
    from gateway.aggregates import AggregateSet, emit

    states = {} if states is None else states
    aggregates = AggregateSet(core.policy, 1)
    out: list[EventResult] = []

    def emitted(tables: list[Any]) -> None:
        for table in tables:
            rec, msg = emit(core.pipeline, table)
            out.append(EventResult(records=[rec], messages=[msg]))

    for e in events:
        result = core.pipeline.process(orjson.dumps(e), states, verify=False)
        out.append(result)
        if result.event is not None:
            emitted(aggregates.event(0, result.event.occurred_at, result.contributions))
    emitted(aggregates.close())
    return out
