"""End to end as a user runs it: the installed `gateway` command replays the bundled sample
and bad input, and `gateway agent read` shows each agent only what the policy allows."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson

from gateway.dev.samples import scenario
from gateway.events import safe_field_name
from tests.cli.helpers import gw


def read(d: Path, agent: str, source: str = "out") -> list[dict]:
    r = gw("agent", "read", "--agent", agent, source, cwd=d)
    return [orjson.loads(line) for line in r.stdout.splitlines()]


def by_subject_event(msgs: list[dict]) -> list[tuple[str, str]]:
    return [(m["payload"].get("event_type", m["payload"].get("notice")), m["kind"]) for m in msgs]


def test_replay_writes_topics_records_and_summary(replayed: Path) -> None:
    out = replayed / "out"
    topics = sorted(p.name for p in (out / "topics").glob("*.jsonl"))
    assert topics == [
        "agent.analytics.jsonl",
        "agent.email.jsonl",
        "agent.payments.jsonl",
        "agent.reseller.jsonl",
        "agent.shipping.jsonl",
    ]
    records = [orjson.loads(x) for x in (out / "records.jsonl").read_bytes().splitlines()]
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["events"] == 27 and summary["dead_letters"] == 0
    sent = sum(len((out / "topics" / t).read_bytes().splitlines()) for t in topics)
    assert sent == sum(r["outcome"] not in ("withheld", "contributed") for r in records)
    # Analytics gets aggregates only, and the sample's few customers never reach k=10 in a
    # window: their visits and orders contributed, nothing was sent.
    analytics = {r["outcome"] for r in records if r["agent"] == "analytics"}
    assert analytics == {"contributed", "withheld"}
    assert (out / "topics" / "agent.analytics.jsonl").read_bytes() == b""
    # Every message on a topic has its record, with the digest of exactly those bytes.
    digests = {r["payload_digest"] for r in records if r["payload_digest"]}
    import hashlib

    for t in topics:
        for line in (out / "topics" / t).read_bytes().splitlines():
            assert "sha256:" + hashlib.sha256(line).hexdigest() in digests


def test_each_agent_reads_only_what_the_policy_allows(replayed: Path) -> None:
    shipping = read(replayed, "shipping")
    assert shipping and all("prescription" not in m["payload"].get("data", {}) for m in shipping)
    email = read(replayed, "email")
    rx = [m for m in email if "prescription" in m["payload"].get("data", {})]
    assert len(rx) == 1  # only Bob opted in, for the email agent
    assert rx[0]["payload"]["data"]["recipient"]["first"] == "Bob"
    reseller = read(replayed, "reseller")
    assert [m["payload"]["data"]["company"] for m in reseller] == ["Lensworks Optical LLC"]
    # Aggregates only (and no window of the sample reaches the threshold): nothing, not even
    # an erasure notice -- analytics never held anything about Erin.
    assert read(replayed, "analytics") == []
    # Erin was erased: her shipment afterwards reached nobody (agents know events by their
    # own references only: the records name the disclosures the shipment caused, if any).
    erin_events = [e["event_id"] for e in scenario() if e["subject"]["customer_id"] == "C-1005"]
    records = [
        orjson.loads(x) for x in (replayed / "out" / "records.jsonl").read_bytes().splitlines()
    ]
    shipment = {r["record_id"] for r in records if r["event_id"] == erin_events[-1]}
    assert shipment
    assert all(
        m["disclosure_id"] not in shipment for a in ("shipping", "email") for m in read(replayed, a)
    )


def test_reader_rejects_tampered_and_foreign_messages(replayed: Path, tmp_path: Path) -> None:
    src = (replayed / "out" / "topics" / "agent.payments.jsonl").read_bytes().splitlines()
    msg = orjson.loads(src[0])
    ct = bytearray(base64.b64decode(msg["ciphertext"]))
    ct[5] ^= 1
    msg["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    tampered = replayed / "tampered.jsonl"
    tampered.write_bytes(orjson.dumps(msg) + b"\n" + b"\n".join(src[1:]) + b"\n" + src[1] + b"\n")
    r = gw("agent", "read", "--agent", "payments", str(tampered), cwd=replayed, check=False)
    assert r.returncode == 1
    assert "rejected tampered.jsonl:1" in r.stderr
    assert len(r.stdout.splitlines()) == len(src) - 1  # the rest read, duplicate dropped
    assert "1 duplicate(s) dropped" in r.stderr
    r = gw(
        "agent",
        "read",
        "--agent",
        "email",
        str(replayed / "out" / "topics" / "agent.payments.jsonl"),
        cwd=replayed,
        check=False,
    )
    assert r.returncode == 1 and "not 'email'" in r.stderr and r.stdout == ""


def test_bad_input_lines_are_dead_lettered_and_nothing_else_is_lost(tmp_path: Path) -> None:
    good = [orjson.dumps(e) for e in scenario()]
    order = next(e for e in scenario() if e["event_type"] == "order.placed")
    wrong_type = orjson.loads(orjson.dumps(order))
    wrong_type["data"]["total"] = "four hundred"
    unknown_field = orjson.loads(orjson.dumps(order))
    unknown_field["data"]["ssn"] = "123-45-6789"
    unknown_type = {**order, "event_type": "order.teleported"}
    oversized = orjson.loads(orjson.dumps(order))
    oversized["data"]["notes"] = "Alice Moreno " * 30_000
    bad = [
        b'{"event_id": "x", "data": {"name": "Alice Moreno"',
        orjson.dumps(wrong_type),
        orjson.dumps(unknown_field),
        orjson.dumps(unknown_type),
        orjson.dumps(oversized),
        b"\xff\xfe not utf8",
    ]
    lines = []
    for i, g in enumerate(good):
        lines.append(g)
        if i < len(bad):
            lines.append(bad[i])
    events = tmp_path / "mixed.jsonl"
    events.write_bytes(b"\n".join(lines) + b"\n")
    r = gw("replay", str(events), "--out", "out", cwd=tmp_path)
    assert f"{len(good)} events processed, {len(bad)} dead-lettered" in r.stdout
    dead = [
        orjson.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_bytes().splitlines()
    ]
    reasons = [(d["line"], d["reason"]) for d in dead]
    assert reasons == [
        (2, "not_json"),
        (4, "schema"),
        (6, "schema"),
        (8, "unknown_type"),
        (10, "too_large"),
        (12, "not_json"),
    ]
    errors = [d["error"] for d in dead]
    assert "data.total" in errors[1]
    assert f"data.{safe_field_name('ssn')}: unknown field" in errors[2]
    assert "unknown event type <type #" in errors[3] and "order.teleported" not in errors[3]
    assert "limit is 262144" in errors[4]
    text = (tmp_path / "out" / "deadletter.jsonl").read_text()
    for pii in ("Alice", "Moreno", "123-45-6789", "four hundred", "alice.moreno"):
        assert pii not in text
    assert dead[1]["shape"]["data"]["total"] == "<str>"
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["events"] == len(good)
