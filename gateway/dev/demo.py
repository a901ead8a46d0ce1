"""`gateway demo`: the whole system on one machine, in under a minute.

Starts the embedded broker, a gateway worker (with the ledger sink), publishes the
bundled sample events (plus two bad ones) and a morning of shop traffic (visits and orders
from a few hundred customers: enough for the analytics agent's aggregate tables to pass
their threshold), lets each agent read and decrypt its topic with its own key, prints what
each agent received and what was withheld or removed, and the analytics agent's decrypted
aggregate tables; then cleans up. The disclosure log stays in the default place for
`gateway log ...`.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from gateway.aggregates import AggregateSet, emit
from gateway.dev.broker import EmbeddedBroker, free_port
from gateway.dev.samples import _addr, _order
from gateway.errors import GatewayError
from gateway.kafka.read import read_decision_records, read_topic
from gateway.keys import demo_agent_private_key
from gateway.policy import load_policy
from gateway.records import DecisionRecord
from gateway.routing import subject_partition
from gateway.runtime import build_core, demo_signers, ensure_demo_keys
from gateway.sdk.aggregates import AggregateBook, table_view
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


_PAGES = ["/", "/frames", "/frames/titanium", "/sunglasses", "/contacts", "/cart", "/help"]
_UAS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
    " Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
_REFERRERS = [None, "https://www.example-search.com/?q=titanium+frames", "https://social.example/"]
_PLACES = [
    ("Springfield", "IL", "62704"),
    ("Chicago", "IL", "60601"),
    ("Denver", "CO", "80202"),
    ("Seattle", "WA", "98101"),
    ("Boston", "MA", "02108"),
]
_PRODUCTS = [
    {"sku": "SKU-31052", "description": "Titanium frame 52-18", "unit_price": 149.0},
    {"sku": "SKU-60210", "description": "Polarized sunglasses, tortoise", "unit_price": 119.0},
    {"sku": "SKU-50010", "description": "Hard case with microfiber cloth", "unit_price": 12.0},
]
TRAFFIC_START = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


def shop_traffic(n: int = 1200, customers: int = 240, seed: int = 14) -> list[bytes]:
    """A morning of visits (pages, browsers, languages, referrers) and orders (places,
    products) from ``customers`` customers: what the analytics agent's tables are about."""
    rnd = random.Random(seed)
    out = []
    t = TRAFFIC_START
    for i in range(n):
        c = rnd.randrange(customers)
        cid = f"C-{300000 + c}"
        t += timedelta(seconds=rnd.randint(1, 12))
        at = t.isoformat().replace("+00:00", "Z")
        if rnd.random() < 0.8:
            data: dict[str, Any] = {
                "session_id": f"sess-{c:05d}-{i}",
                "pages": rnd.sample(_PAGES, rnd.randint(1, 4)),
                "duration_s": rnd.randint(10, 900),
                "device": {
                    "ip": f"198.51.100.{c % 250}",
                    "user_agent": rnd.choice(_UAS),
                    "language": rnd.choice(["en-US", "en-US", "en-GB", "es-US", "fr-CA"]),
                },
                "gpc": False,
            }
            ref = rnd.choice(_REFERRERS)
            if ref:
                data["referrer"] = ref
            etype = "site.visit"
        else:
            city, st, zp = _PLACES[c % len(_PLACES)]
            items = [
                {**p, "quantity": rnd.randint(1, 2)}
                for p in rnd.sample(_PRODUCTS, rnd.randint(1, 2))
            ]
            data = _order(
                f"SO-9{i:05d}",
                "Sam",
                f"Customer{c}",
                _addr(f"{c + 1} Main Street", city, st, zp),
                f"c{c}@example.com",
                "+1-555-555-0100",
                items=items,
            )
            etype = "order.placed"
        event = {
            "event_id": f"evt-traffic-{i:06d}",
            "event_type": etype,
            "schema_version": 1,
            "occurred_at": at,
            "subject": {"customer_id": cid, "type": "consumer"},
            "data": data,
        }
        out.append(orjson.dumps(event))
    return out


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
    lines += shop_traffic()

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
                f"[bold]3/5[/bold] publishing {len(lines)} events (the samples and a morning "
                f"of shop traffic) and {len(BAD_EVENTS)} bad ones…"
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
    _aggregates(console, settings, policy, views, lines)
    return 0


def offline_aggregates(settings: Settings, policy: Any, lines: list[bytes]) -> list[Received]:
    """What the analytics agent gets for ``lines`` from the offline core (the replay's
    path), opened with the agent's key: the same tables the stream emits."""
    core = build_core(settings, policy)
    reader = AgentReader(
        "analytics",
        demo_agent_private_key(settings.keys_dir, "analytics"),
        settings.signing_public_key_path,
    )
    aggs = AggregateSet(policy, settings.partitions)
    states: dict[str, Any] = {}
    out: list[Received] = []

    def opened(tables: list[Any]) -> None:
        for table in tables:
            _, msg = emit(core.pipeline, table)
            got = reader.read(msg.value)
            if isinstance(got, Received):
                out.append(got)

    for line in lines:
        res = core.pipeline.process(line, states, verify=False)
        if res.event is not None:
            part = subject_partition(res.event.customer_id, settings.partitions)
            opened(aggs.event(part, res.event.occurred_at, res.contributions))
    opened(aggs.close())
    return out


def _aggregates(
    console: Console,
    settings: Settings,
    policy: Any,
    views: dict[str, AgentView],
    lines: list[bytes],
) -> None:
    agents = [n for n, a in policy.agents.items() if a.aggregate is not None]
    for name in agents:
        book = AggregateBook()
        book.extend(views[name].received)
        source = "decrypted from its topic"
        if not book.windows and name == "analytics":
            # The stream worker publishes aggregates once its windows close; where it has
            # not (yet), show the same tables from the offline core, and say so.
            book.extend(offline_aggregates(settings, policy, lines))
            source = "the offline core's tables for the same events (the stream sent none)"
        console.print()
        console.print(
            f"[bold]What {name} received: aggregate tables only[/bold] ({source}): "
            f"{len(book.windows)} windows, {book.superseded} revisions replaced"
        )
        hourly = [b for b in book.latest("1h") if b["contributing_customers"]]
        for body in hourly[:2]:
            console.print(
                f"[bold]window {body['window']['start']} to {body['window']['end']}[/bold]: "
                f"{body['contributing_customers']} contributing customers, "
                f"{body['late_events']} late events"
            )
            for table in body["tables"]:
                if table["rows"] or table["suppressed"]:
                    console.print(table_view(body, table))


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
            else r.kind.replace("_", " ")
            for r in v.received
        )
        events = [r for r in v.received if r.kind != "aggregate"]
        got = set().union(*(_fields(r.payload) for r in events)) if events else set()
        if any(r.kind == "aggregate" for r in v.received):
            got.add("aggregate tables")
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
        kinds = Counter(r.kind for r in views["analytics"].received)
        out.append(
            f"analytics received {kinds['aggregate']} aggregate table message(s) and "
            f"{kinds['disclosure']} per-event message(s): no customer, session or IP"
        )
    return out
