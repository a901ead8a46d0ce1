"""The ledger sink on the real embedded broker: poison timestamps and forged records among
good ones (issue 11, "a poison timestamp stops the log"; issue 12, "forged records").

Records are produced to the disclosure topic here, as a worker would (with its MAC) and as
an attacker with broker access would (without, or with a MAC under another key); the sink
is a `gateway run --role ledger` subprocess."""

from __future__ import annotations

import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from gateway.cli import main
from gateway.dev.samples import scenario
from gateway.erasure import ErasureRequest
from gateway.integrity import HEADER_MAC, WorkerMac
from gateway.ledger import open_store, verify_log
from gateway.records import DecisionRecord
from gateway.sdk.publisher import PRODUCER_DEFAULTS
from gateway.stream.protocol import HEADER_KIND
from tests.ledger.data import database
from tests.stream.helpers import Env, Worker, wait_for

pytestmark = pytest.mark.broker

POISONS = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00")


@dataclass
class Sent:
    partition: int
    offset: int
    value: bytes


def produce(env: Env, items: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]]) -> list[Sent]:
    """Each (partition, key, value, headers) to the disclosure topic, in order."""
    p = KafkaProducer(bootstrap_servers=[env.settings.bootstrap_servers], **PRODUCER_DEFAULTS)
    futures = [
        (p.send(env.settings.disclosure_topic, value, key, headers, partition), value)
        for partition, key, value, headers in items
    ]
    p.flush()
    sent = [Sent(f.get(10).partition, f.get(10).offset, v) for f, v in futures]
    p.close()
    return sent


def with_time(rec: DecisionRecord, when: str, rid: str) -> bytes:
    doc = orjson.loads(rec.to_json())
    doc["occurred_at"] = when
    doc["record_id"] = rid
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.mark.slow
def test_poison_and_forged_records_are_quarantined_and_the_sink_carries_on(env: Env) -> None:
    lines = [orjson.dumps(e) for e in scenario()]
    good = [r for out in env.expected(lines) for r in out.records]
    assert len(good) > 40
    mac = WorkerMac(env.core.worker_key)
    other = WorkerMac(os.urandom(32))
    parts = env.settings.partitions

    def signed(value: bytes) -> list[tuple[str, bytes]]:
        return [("record_id", b"x"), (HEADER_MAC, mac.record(value))]

    items: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]] = []
    bad: dict[str, list[int]] = {}  # reason -> indexes into items

    def add(reason: str | None, partition: int, value: bytes, headers: list) -> None:
        if reason is not None:
            bad.setdefault(reason, []).append(len(items))
        items.append((partition, b"ref", value, headers))

    # Each partition starts with a bad message, so that everything good comes after one.
    for i, when in enumerate(POISONS):
        value = with_time(good[i], when, f"poison-{i}")
        add("unstorable", i % parts, value, signed(value))
    planted = good[2].model_copy(
        update={"record_id": "planted-1", "outcome": "withheld", "reason": "planted"}
    )
    add("unsigned", 2 % parts, planted.to_json(), [])
    forged = good[3].model_copy(update={"record_id": "forged-2"}).to_json()
    add("bad_mac", 0, forged, [(HEADER_MAC, other.record(forged))])
    add("malformed", 1 % parts, b"not a record", signed(b"not a record"))
    # A worker's control message (an erasure request) is not for the log, nor forged.
    control = ErasureRequest(
        event_id="erase-1",
        event_fp="0" * 64,
        requested_at="2026-03-02T12:00:00Z",
        subject_type="consumer",
        subject_refs=["ref-nobody"],
        agent_subjects={},
        policy_version=env.core.pipeline.policy_version,
    ).to_json()
    items.append((0, b"ref", control, [(HEADER_KIND, b"erasure_request"), *signed(control)]))
    for i, rec in enumerate(good):
        value = rec.to_json()
        add(None, i % parts, value, signed(value))
    # A good record again (a worker's retry): a duplicate, not quarantined.
    dup = good[5].to_json()
    add(None, 1 % parts, dup, signed(dup))

    sent = produce(env, items)
    url = env.settings.ledger_url
    with Worker(env, role="ledger") as w:

        def ledger_ids() -> set[str]:
            try:
                with open_store(url, create=False) as store:
                    from gateway.ledger import list_records

                    return {r.record_id for r in list_records(store, limit=None)}
            except Exception:
                return set()

        want = {r.record_id for r in good}
        wait_for(lambda: ledger_ids() >= want, 90, "every good record in the ledger")
        wait_for(lambda: (w.health() or {}).get("ledger_quarantined", 0) >= 5, 30, "the quarantine")
        assert ledger_ids() == want  # nothing forged, nothing poisoned, nothing twice
        with open_store(url, create=False) as store:
            report = verify_log(store, env.core.verify_key)
            assert report.ok, report.problems
            assert store.count() == len(good)

        # Listed by the command, with where each was read and why.
        r = CliRunner().invoke(main, ["log", "quarantine", "--db", url, "--format", "json"])
        assert r.exit_code == 0, r.output
        listed = orjson.loads(r.output)
        assert listed["counts"] == {k: len(v) for k, v in bad.items()}
        by_pos = {(m["partition"], m["offset"]): m for m in listed["messages"]}
        assert len(by_pos) == 5
        for reason, indexes in bad.items():
            for i in indexes:
                m = by_pos[(sent[i].partition, sent[i].offset)]
                assert m["reason"] == reason
                assert m["topic"] == env.settings.disclosure_topic
                assert m["value_size"] == len(sent[i].value)
                # Bodies only of what a worker wrote.
                assert (m["body"] is not None) == (reason in ("unstorable", "malformed"))
        poison = by_pos[(sent[bad["unstorable"][0]].partition, sent[bad["unstorable"][0]].offset)]
        assert poison["record_id"] == "poison-0" and "OverflowError" in poison["error"]
        assert poison["body"] == sent[bad["unstorable"][0]].value.decode()
        assert (
            by_pos[(sent[bad["unsigned"][0]].partition, sent[bad["unsigned"][0]].offset)][
                "record_id"
            ]
            == "planted-1"
        )

        # The table fits an 80-column terminal.
        r = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["log", "quarantine", "--db", url])
        assert r.exit_code == 0, r.output
        assert "unstorable" in r.output and "bad_mac" in r.output
        assert max(len(line) for line in r.output.splitlines()) <= 80

        # Counted in /metrics, and the sink is caught up and healthy.
        port = env.settings.web_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        q = "gateway_ledger_quarantined_total"
        for reason, indexes in bad.items():
            assert metric(text, q, f'{{reason="{reason}"}}') == len(indexes), reason
        assert metric(text, "gateway_ledger_records_appended_total") == len(good)
        wait_for(lambda: (w.health() or {}).get("sink", {}).get("lag") == 0, 15, "lag 0")
        h = w.health() or {}
        assert h["status"] == "ok" and h["sink"]["stalled"] is False
        assert h["ledger_seen"] == len(items)

    # Started again (the same group, so from its committed offsets, or from the start):
    # nothing is appended or quarantined twice.
    with Worker(env, role="ledger", log_name="worker2") as w2:
        wait_for(lambda: (w2.health() or {}).get("ready") is True, 60, "the sink ready")
        with open_store(url, create=False) as store:
            assert store.count() == len(good)
        r = CliRunner().invoke(main, ["log", "quarantine", "--db", url, "--format", "json"])
        assert orjson.loads(r.output)["total"] == 5


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def test_forged_records_are_never_logged(env: Env, backend: str, tmp_path: Path) -> None:
    """Issue 12: a record written straight to the disclosure topic -- a `withheld` record
    planted under a record id, or one with a MAC under another key -- is not logged; and a
    poison record among them is isolated (on each store back end)."""
    with database(backend, tmp_path) as url:
        env = Env(
            env.settings.model_copy(update={"ledger_url": url}), env.policy, env.core, env.dir
        )
        lines = [orjson.dumps(e) for e in scenario()][:12]
        good = [r for out in env.expected(lines) for r in out.records]
        mac = WorkerMac(env.core.worker_key)
        planted = good[0].model_copy(
            update={"record_id": "planted-1", "outcome": "withheld", "reason": "planted"}
        )
        forged = good[1].model_copy(update={"record_id": "forged-2"}).to_json()
        poison = with_time(good[2], POISONS[1], "poison-3")
        items: list[tuple[int, bytes, bytes, list[tuple[str, bytes]]]] = [
            (0, b"ref", planted.to_json(), []),
            (1, b"ref", forged, [(HEADER_MAC, WorkerMac(os.urandom(32)).record(forged))]),
        ]
        items += [
            (i % 3, b"ref", r.to_json(), [(HEADER_MAC, mac.record(r.to_json()))])
            for i, r in enumerate(good)
        ]
        items.insert(5, (2, b"ref", poison, [(HEADER_MAC, mac.record(poison))]))
        produce(env, items)
        with Worker(env, role="ledger") as w:
            wait_for(lambda: (w.health() or {}).get("ledger_seen", 0) >= len(items), 60, "the sink")
            with open_store(url, create=False) as store:
                assert store.get("planted-1") is None and store.get("forged-2") is None
                assert store.get("poison-3") is None
                assert store.count() == len(good)
                assert verify_log(store, env.core.verify_key).ok
            r = CliRunner().invoke(main, ["log", "quarantine", "--db", url, "--format", "json"])
            assert orjson.loads(r.output)["counts"] == {
                "unsigned": 1,
                "bad_mac": 1,
                "unstorable": 1,
            }
