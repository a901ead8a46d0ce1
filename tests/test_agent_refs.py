"""Agents cannot join their data: "We have and follow a policy of not disclosing customers'
personal information to third parties" beyond what each needs. Each agent gets its own
reference for an event (keyed per agent, like its pseudonyms), its own pseudonym of the
subject, and times only as precise as its purpose needs; no publisher event id reaches an
agent, so nothing in one agent's message is a key into another's."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import ConsentState
from gateway.crypto import Opener
from gateway.keys import demo_agent_private_key, load_agent_private_key, load_verify_key
from gateway.pipeline import cut_time
from gateway.policy import load_policy
from gateway.runtime import Core, build_core, ensure_demo_keys
from gateway.settings import Settings
from tests.conftest import event

POLICY = """
version: 1
controller: {legal_name: Kasperek Optical Inc, contact: privacy@kasperekoptical.com}
retention:
  default: {period: 3y, basis: "as long as needed to complete and record orders"}
agents:
  stats:
    description: Sales statistics on pseudonymised data.
    recipient: {legal_name: Stats Ltd., address: 1 Data Way, role: service_provider}
    topic: agent.stats
    public_key: agents/stats.pub
    subscribes: [order.placed]
    purposes:
      analytics.reporting:
        legal_basis: legitimate_interests
        categories:
          system.operations: send
          user.unique_id.customer_number: {transform: pseudonym}
          user.unique_id.order_number: {transform: pseudonym}
          user.behavior.purchase_history: send
          user.contact.address.state: send
  mailer:
    description: Order confirmations.
    recipient: {legal_name: Mail GmbH, address: 2 Post Street, role: service_provider}
    topic: agent.mailer
    public_key: agents/mailer.pub
    subscribes: [order.placed]
    timestamp_precision: hour
    purposes:
      essential.service.notifications.email:
        legal_basis: contract
        categories:
          system.operations: send
          user.name: send
          user.contact.email: send
"""


@pytest.fixture(scope="module")
def two_agents(tmp_path_factory: pytest.TempPathFactory) -> tuple[Core, dict[str, Opener]]:
    d = tmp_path_factory.mktemp("refs")
    (d / "agents.yaml").write_text(POLICY)
    settings = Settings(policy_path=d / "agents.yaml", keys_dir=d / "keys")
    policy = load_policy(settings.policy_path)
    ensure_demo_keys(settings, policy)
    gateway_key = load_verify_key(settings.signing_public_key_path)
    openers = {
        name: Opener(
            name,
            load_agent_private_key(demo_agent_private_key(settings.keys_dir, name)),
            gateway_key,
        )
        for name in policy.agents
    }
    return build_core(settings, policy), openers


def orders(n: int = 24) -> list[dict[str, Any]]:
    """Orders of a few customers over two days, several a day, each at its own minute."""
    t0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        cid = f"C-join-{i % 5}"
        when = t0 + timedelta(days=i % 2, hours=(i // 2) % 2, minutes=i)
        ev = event(
            "order.placed",
            {
                "order_id": f"SO-{i}",
                "items": [
                    {"sku": "FRAME-1", "description": "Frame", "quantity": 1, "unit_price": 99.0}
                ],
                "total": 99.0,
                "recipient": {"first": f"First{i % 5}", "last": f"Last{i % 5}"},
                "contact_email": f"c{i % 5}@example.com",
                "shipping_address": {
                    "kind": "shipping",
                    "street": f"{i % 5} Main St",
                    "city": "Springfield",
                    "state": "IL",
                    "postal_code": "62704",
                    "country": "US",
                },
                "payment": {"method": "net_terms"},
            },
            customer=cid,
            n=i,
        )
        ev["occurred_at"] = when.isoformat().replace("+00:00", "Z")
        out.append(ev)
    return out


def scalars(obj: Any, skip: frozenset[str] = frozenset()) -> set[Any]:
    if isinstance(obj, dict):
        return {v for k, x in obj.items() if k not in skip for v in scalars(x, skip)}
    if isinstance(obj, list):
        return {v for x in obj for v in scalars(x, skip)}
    return {obj}


# Not identifying by nature: the policy version and the purposes' names.
NOT_KEYS = frozenset({"policy_version", "purposes"})


def everything_an_agent_sees(message: Any, opener: Opener) -> set[Any]:
    """Every scalar of the decrypted payload, the sealed header and envelope, and the Kafka
    message key."""
    doc = orjson.loads(message.value)
    payload = opener.open(message.value).json()
    return (
        scalars(payload, NOT_KEYS)
        | scalars(doc["header"])
        | scalars(doc["envelope"])
        | {message.key.decode()}
    )


def test_no_value_joins_two_agents_messages_for_the_same_event(
    two_agents: tuple[Core, dict[str, Opener]],
) -> None:
    core, openers = two_agents
    states: dict[str, ConsentState] = {}
    seen: dict[str, dict[str, set[Any]]] = defaultdict(dict)  # agent -> event id -> values
    for ev in orders():
        out = core.pipeline.process(orjson.dumps(ev), states, verify=False)
        assert {m.agent for m in out.messages} == {"stats", "mailer"}
        for m in out.messages:
            seen[m.agent][ev["event_id"]] = everything_an_agent_sees(m, openers[m.agent])

    def where(agent: str, value: Any) -> set[str]:
        return {e for e, values in seen[agent].items() if value in values}

    joins = []
    for event_id, values in seen["stats"].items():
        for value in values & seen["mailer"][event_id]:
            # A join key picks out this one event in each agent's data.
            if where("stats", value) == where("mailer", value) == {event_id}:
                joins.append((event_id, value))
    assert joins == []


def test_an_agent_message_carries_its_own_reference_and_subject_and_no_event_id(
    two_agents: tuple[Core, dict[str, Opener]],
) -> None:
    core, openers = two_agents
    ev = orders(1)[0]
    out = core.pipeline.process(orjson.dumps(ev), {}, verify=False)
    refs = {}
    for m in out.messages:
        opened = openers[m.agent].open(m.value)
        payload = opened.json()
        meta = payload["_gateway"]
        assert ev["event_id"] not in orjson.dumps(payload).decode()
        assert ev["event_id"] not in m.value.decode()
        assert "event_id" not in payload
        assert meta["subject"] == m.key.decode()  # the agent's pseudonym of the subject
        assert meta["ref"] == opened.ref == core.pipeline.agent_ref(m.agent, out.event.event_fp)  # type: ignore[union-attr]
        assert meta["disclosure_id"] == opened.disclosure_id == m.disclosure_id
        refs[m.agent] = (meta["ref"], meta["subject"])
    assert refs["stats"][0] != refs["mailer"][0] and refs["stats"][1] != refs["mailer"][1]
    # The ledger keeps the event id and the exact time.
    (rec,) = [r for r in out.records if r.agent == "stats"]
    assert rec.event_id == ev["event_id"]
    assert rec.occurred_at == datetime(2026, 4, 1, 8, 0, tzinfo=UTC)


def test_times_are_cut_to_each_agents_precision(
    two_agents: tuple[Core, dict[str, Opener]],
) -> None:
    core, openers = two_agents
    ev = orders(1)[0]
    ev["occurred_at"] = "2026-04-01T08:47:13.250000+02:00"
    out = core.pipeline.process(orjson.dumps(ev), {}, verify=False)
    got = {m.agent: openers[m.agent].open(m.value).json()["occurred_at"] for m in out.messages}
    assert got == {"stats": "2026-04-01T00:00:00Z", "mailer": "2026-04-01T06:00:00Z"}
    t = datetime(2026, 4, 1, 6, 47, 13, 250000, tzinfo=UTC)
    assert [cut_time(t, p) for p in ("day", "hour", "minute", "second")] == [
        "2026-04-01T00:00:00Z",
        "2026-04-01T06:00:00Z",
        "2026-04-01T06:47:00Z",
        "2026-04-01T06:47:13Z",
    ]


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(2099, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=5, minutes=30))]
        ),
    )
)
def test_cut_time_is_the_utc_time_truncated_whatever_the_offset(t: datetime) -> None:
    # The fast path cuts the ISO text of UTC times; every time must come out as the
    # arithmetic truncation of its UTC value.
    u = t.astimezone(UTC)
    want = {
        "day": u.replace(hour=0, minute=0, second=0, microsecond=0),
        "hour": u.replace(minute=0, second=0, microsecond=0),
        "minute": u.replace(second=0, microsecond=0),
        "second": u.replace(microsecond=0),
    }
    for p, w in want.items():
        assert cut_time(t, p) == w.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[arg-type]


def test_the_default_precision_is_a_day(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY.replace("    timestamp_precision: hour\n", ""))
    assert load_policy(tmp_path / "p.yaml").agents["mailer"].timestamp_precision == "day"
