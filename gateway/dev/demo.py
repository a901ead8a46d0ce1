"""`gateway demo`: the whole system on one machine, in under a minute.

Starts the embedded broker, a gateway worker (with the ledger sink), publishes the
bundled sample events (plus two bad ones), lets each agent read and decrypt its topic
with its own key, prints what each agent received and what was withheld or removed, and
cleans up. The disclosure log stays in the default place for `gateway log ...`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from gateway.dev.broker import EmbeddedBroker, free_port
from gateway.errors import GatewayError
from gateway.kafka.read import read_decision_records, read_topic
from gateway.keys import demo_agent_private_key
from gateway.policy import load_policy
from gateway.records import DecisionRecord
from gateway.runtime import demo_signers, ensure_demo_keys
from gateway.sdk.publisher import PRODUCER_DEFAULTS, Publisher
from gateway.sdk.reader import AgentReader, Received
from gateway.settings import Settings
from gateway.stream.worker import prepare

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample_events.jsonl"
BAD_EVENTS = [
    b'{"event_id": "evt-bad-0001", "event_type": "order.placed", "data": {',
    orjson.dumps(
        {
            "event_id": "evt-bad-0002",
            "event_type": "customer.registered",
            "schema_version": 1,
            "occurred_at": "2026-03-02T12:00:00Z",
            "subject": {"customer_id": "C-1009", "type": "consumer"},
            "data": {"emails": ["zoe@example.com"], "ssn": "078-05-1120"},
        }
    ),
]


@dataclass
class AgentView:
    received: list[Received] = field(default_factory=list)
    rejected: int = 0


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return orjson.loads(r.read())
    except OSError:
        return None


def _wait(
    what: str, cond: Callable[[], bool], timeout: float, worker: subprocess.Popen, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if worker.poll() is not None:
            raise GatewayError(
                f"the gateway worker exited while waiting for {what}; see {log_path}"
            )
        if time.monotonic() > deadline:
            raise GatewayError(f"timed out waiting for {what}; see {log_path}")
        time.sleep(0.2)


def run_demo(settings: Settings, console: Console) -> int:
    started = time.monotonic()
    work = settings.keys_dir.parent / "demo"
    work.mkdir(parents=True, exist_ok=True)
    policy = load_policy(settings.policy_path)
    for what in ensure_demo_keys(settings, policy):
        console.print(f"[dim]created {what}[/dim]")
    lines = [ln for ln in SAMPLE.read_bytes().splitlines() if ln.strip()]

    console.print("[bold]1/5[/bold] starting the embedded Kafka broker (Tansu)…")
    with EmbeddedBroker() as broker:
        web_port = free_port()
        env = {
            **os.environ,
            "GATEWAY_BOOTSTRAP_SERVERS": broker.bootstrap,
            "GATEWAY_WEB_PORT": str(web_port),
            "GATEWAY_POLICY_PATH": str(settings.policy_path),
            "GATEWAY_KEYS_DIR": str(settings.keys_dir),
            "GATEWAY_LEDGER_URL": settings.ledger_url,
        }
        run_settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        prepare(run_settings)  # topics with their partitions, before anyone produces
        console.print(f"      broker at {broker.bootstrap}")
        console.print("[bold]2/5[/bold] starting the gateway worker (faust, with the ledger sink)…")
        log_path = work / "worker.log"
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            health = f"http://127.0.0.1:{web_port}/health"
            _wait(
                "the worker to start", lambda: _get_json(health) is not None, 45, worker, log_path
            )
            console.print(f"      worker pid {worker.pid}, health {health}")

            console.print(
                f"[bold]3/5[/bold] publishing {len(lines)} sample events and "
                f"{len(BAD_EVENTS)} bad ones…"
            )
            # Each event signed by the publisher the policy allows to send it.
            signers = demo_signers(settings, policy)
            with Publisher(broker.bootstrap, settings.input_topic) as pub:
                futures = [
                    pub.publish(line, signer=signers.get(orjson.loads(line)["event_type"]))
                    for line in lines
                ]
                pub.flush()
                sent = sum(1 for f in futures if f.get(timeout=30))
            # Bad events bypass the SDK's validation, as a buggy (but signing) publisher
            # would: dead-lettered for what is wrong with them, not for a missing signature.
            raw = KafkaProducer(bootstrap_servers=[broker.bootstrap], **PRODUCER_DEFAULTS)
            for b, signer in zip(
                BAD_EVENTS,
                (signers.get("order.placed"), signers.get("customer.registered")),
                strict=True,
            ):
                headers = signer.headers(b) if signer is not None else None
                raw.send(settings.input_topic, key=b"C-1009", value=b, headers=headers)
            raw.flush()
            raw.close()
            total = sent + len(BAD_EVENTS)

            def processed() -> bool:
                h = _get_json(health) or {}
                return int(h.get("processed", 0)) >= total

            _wait("the events to be processed", processed, 60, worker, log_path)
            records = read_decision_records(broker.bootstrap, settings.disclosure_topic)

            def logged() -> bool:
                h = _get_json(health) or {}
                return int(h.get("ledger_seen", 0)) >= len(records)

            _wait("the disclosure log", logged, 60, worker, log_path)
            console.print(f"      {total} events processed, {len(records)} decision records logged")

            console.print("[bold]4/5[/bold] each agent reads its topic with its own key…")
            views: dict[str, AgentView] = {}
            for name, agent in policy.agents.items():
                reader = AgentReader(
                    name,
                    demo_agent_private_key(settings.keys_dir, name),
                    settings.signing_public_key_path,
                )
                view = views[name] = AgentView()
                for item in reader.read_many(
                    (p, v) for p, v, _ in read_topic(broker.bootstrap, agent.topic)
                ):
                    if isinstance(item, Received):
                        view.received.append(item)
                    else:
                        view.rejected += 1
            dead = [
                orjson.loads(v)
                for _, v, _ in read_topic(broker.bootstrap, settings.dead_letter_topic)
            ]
        finally:
            console.print("[bold]5/5[/bold] stopping the worker and the broker…")
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
    _report(console, policy, views, records, dead, settings, time.monotonic() - started)
    return 0


def _fields(payload: dict[str, Any]) -> set[str]:
    data = payload.get("data", {})
    return {k for k in data if not k.startswith("_")}


def _report(
    console: Console,
    policy: Any,
    views: dict[str, AgentView],
    records: list[DecisionRecord],
    dead: list[dict[str, Any]],
    settings: Settings,
    elapsed: float,
) -> None:
    by_agent: dict[str, list[DecisionRecord]] = defaultdict(list)
    for r in records:
        by_agent[r.agent].append(r)
    t = Table(title="What each agent received", show_lines=True)
    for col in (
        "agent",
        "received (decrypted)",
        "fields it got",
        "removed before sending",
        "withheld (reason)",
    ):
        t.add_column(col, overflow="fold")
    for name in policy.agents:
        v = views[name]
        kinds = Counter(
            r.payload.get("event_type", "erasure notice")
            if r.kind == "disclosure"
            else "erasure notice"
            for r in v.received
        )
        got = set().union(*(_fields(r.payload) for r in v.received)) if v.received else set()
        removed = Counter(p for r in by_agent[name] for p in r.paths_removed)
        withheld = Counter(r.reason for r in by_agent[name] if r.outcome == "withheld")
        t.add_row(
            f"[bold]{name}[/bold]\n{policy.agents[name].recipient.role}",
            "\n".join(f"{n} x {k}" for k, n in sorted(kinds.items())) or "nothing",
            ", ".join(sorted(got)) or "—",
            ", ".join(p for p, _ in removed.most_common(8)) or "—",
            "\n".join(f"{n} x {k}" for k, n in sorted(withheld.items())) or "—",
        )
    console.print(t)
    console.print("[bold]Rules in action[/bold] (from what the agents actually decrypted):")
    for line in _highlights(views):
        console.print(f"  • {line}")
    console.print(
        f"  • dead-lettered: {len(dead)} bad event(s): "
        + "; ".join(f"{d['reason']}: {d['error'][:70]}" for d in dead)
    )
    console.print()
    console.print(
        f"Disclosure log: [bold]{settings.ledger_url}[/bold] (keys in {settings.keys_dir})"
    )
    console.print(
        "Review it:  gateway log verify  ·  gateway log list --agent email  ·  "
        "gateway log report subject C-1001"
    )
    console.print(
        "Web page:   GATEWAY_REVIEWER_USER=officer GATEWAY_REVIEWER_PASSWORD=… gateway review"
    )
    console.print(f"[green]demo finished in {elapsed:.1f}s[/green]")


def _highlights(views: dict[str, AgentView]) -> list[str]:
    out = []
    rx: dict[str, list[str]] = defaultdict(list)
    for name, v in views.items():
        for r in v.received:
            data = r.payload.get("data", {})
            if "prescription" in data:
                who = data.get("recipient", {}).get("first", "?")
                rx[who].append(name)
    out.append(
        "prescriptions reached: "
        + (", ".join(f"{who}'s → {', '.join(agents)}" for who, agents in rx.items()) or "nobody")
        + " (only customers who opted in; never shipping or analytics)"
    )
    companies = (
        [
            r.payload["data"].get("company")
            for r in views["reseller"].received
            if r.kind == "disclosure"
        ]
        if "reseller" in views
        else []
    )
    out.append(
        f"reseller received: {', '.join(filter(None, companies)) or 'nothing'} "
        "(business customers with marketing consent only)"
    )
    notices = sorted(
        n for n, v in views.items() if any(r.kind == "erasure_notice" for r in v.received)
    )
    out.append(f"erasure notices went to: {', '.join(notices) or 'nobody'}")
    if "analytics" in views:
        sample = next(
            (
                r.payload
                for r in views["analytics"].received
                if r.payload.get("event_type") == "site.visit"
            ),
            None,
        )
        if sample:
            dev = sample["data"].get("device", {})
            out.append(
                f"analytics saw customer {sample['subject'].get('customer_id')}, "
                f"IP {dev.get('ip')}, location {sample['data'].get('location')}"
            )
    return out
