"""Retention as the policy file states it, applied to the log record by record, and to the
consent state: "We will retain your Personal Information for as long as necessary to
provide you with use of the Site, complete and record orders, or as needed to comply with
our legal obligations or enforce our agreements." """

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa

from gateway.crypto import SigningKey
from gateway.ledger.query import RecordFilter, list_records
from gateway.ledger.retention import (
    consent_state_retention,
    due_by_retention,
    expired_subjects,
    prune_by_retention,
    record_retention,
)
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import verify_log
from gateway.policy import Policy, load_policy
from gateway.records import DecisionRecord
from tests.cli.helpers import Env, build_log_env
from tests.ledger.data import database, make_record

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
BROWSING = "user.behavior.browsing_history"  # 13m in agents.yaml
ORDER = "user.unique_id.order_number"  # 7y
NAME = "user.name"  # no rule: the default, 3y


def _rec(
    seq: int, age: timedelta, sent: list[str], *, outcome: str = "disclosed"
) -> DecisionRecord:
    agent = "analytics" if outcome == "disclosed" else "payments"
    rec = make_record(agent, "C-1002", NOW - age, seq=seq, outcome="disclosed")
    if outcome == "withheld":
        return rec.model_copy(
            update={
                "outcome": "withheld",
                "reason": "marketing_opt_out",
                "categories_sent": [],
                "categories_transformed": [],
                "categories_removed": ["user.financial.bank_account"],
            }
        )
    return rec.model_copy(update={"categories_sent": sent, "categories_transformed": []})


# (record, due at NOW under agents.yaml)
CASES: list[tuple[DecisionRecord, bool]] = [
    (_rec(1, timedelta(days=14 * 31), [BROWSING]), True),  # a page view, 14 months on
    (_rec(2, timedelta(days=12 * 31), [BROWSING]), False),  # ... 12 months on
    (_rec(3, timedelta(days=14 * 31), [BROWSING, ORDER]), False),  # with an order: 7y
    (_rec(4, timedelta(days=8 * 366), [ORDER]), True),  # an order, 8 years on
    (_rec(5, timedelta(days=6 * 366), [ORDER]), False),
    (_rec(6, timedelta(days=4 * 366), [NAME]), True),  # no rule: the default 3y
    (_rec(7, timedelta(days=2 * 366), [NAME]), False),
    (_rec(8, timedelta(days=4 * 366), [], outcome="withheld"), True),  # withheld: default
    (_rec(9, timedelta(days=2 * 366), [], outcome="withheld"), False),
]


@pytest.fixture
def logged(url: str, key: SigningKey) -> LedgerStore:
    store = open_store(url, signer=key, checkpoint_every=4)
    store.append([r for r, _ in CASES[:5]], shard=0)
    store.append([r for r, _ in CASES[5:]], shard=1)
    return store


def test_each_record_is_kept_for_its_own_categories_period(
    logged: LedgerStore, policy: Policy, key: SigningKey
) -> None:
    """A record goes when the longest period of the categories it disclosed has passed,
    counted from when it was recorded: an order's record outlives a page view's."""
    retention = policy.retention
    due = {r.record_id for r, d in CASES if d}
    assert sum(due_by_retention(logged, retention, now=NOW).values()) == len(due)

    res = prune_by_retention(logged, retention, now=NOW, rules="policy test")
    assert res.count == len(due)
    assert res.by_period == {"13m": 1, "7y": 1, "3y": 2}
    assert res.statement is not None and res.statement.endswith("retention policy test\n")
    kept = {r.record_id for r in list_records(logged, RecordFilter(), limit=None)}
    assert kept == {r.record_id for r, d in CASES if not d}
    # The hashes stay: the log still verifies, with the public key alone too.
    assert verify_log(logged).ok
    with open_store(logged.engine.url.render_as_string(hide_password=False)) as public:
        assert verify_log(public, key.public_key()).ok
    # A pruned record no longer names its subject, nor its categories.
    with logged.engine.connect() as conn:
        c = sa.table("ledger_records", sa.column("record_id"), sa.column("subject_ref"))
        refs = dict(conn.execute(sa.select(c.c.record_id, c.c.subject_ref)).all())
        terms = {
            rid for (rid,) in conn.execute(sa.text("SELECT DISTINCT record_id FROM ledger_terms"))
        }
    assert all(refs[rid] is None for rid in due) and not due & terms
    assert all(refs[rid] is not None for rid in kept)
    # Done once: nothing more is due at the same moment.
    assert prune_by_retention(logged, retention, now=NOW).count == 0
    # Later, the page view of 12 months ago is due too (13 months after it).
    later = prune_by_retention(logged, retention, now=NOW + timedelta(days=2 * 31))
    assert later.count == 1 and later.by_period == {"13m": 1}


def test_record_retention_takes_the_longest_and_withholdings_the_default(
    policy: Policy,
) -> None:
    r = policy.retention
    assert record_retention(r, "disclosed", [BROWSING]) == ("13m", timedelta(days=13 * 31))
    assert record_retention(r, "disclosed", [BROWSING, ORDER])[0] == "7y"
    assert record_retention(r, "disclosed", [])[0] == r.default.period
    assert record_retention(r, "erasure_notice", [])[0] == r.default.period
    # Whatever a withholding names, nothing left the gateway: the default.
    assert record_retention(r, "withheld", [ORDER]) == ("3y", r.default.duration)


def test_consent_states_expire_after_their_period_since_last_seen(policy: Policy) -> None:
    """The consent state is kept for the privacy preferences' period from the customer's
    last event, so an opt-out outlives every record kept about the customer."""
    period = consent_state_retention(policy.retention)
    assert period == policy.retention.retention_for(["user.privacy_preferences"])
    assert all(period >= rule.duration for rule in policy.retention.categories.values())
    states = {
        "C-old": ("opt_out", NOW - period - timedelta(seconds=1)),
        "C-edge": ("opt_in", (NOW - period).replace(tzinfo=None)),  # naive: UTC
        "C-recent": ("unknown", NOW - period + timedelta(days=1)),
    }
    assert expired_subjects(states, policy.retention, NOW) == ["C-edge", "C-old"]
    assert expired_subjects({}, policy.retention, NOW) == []


def test_log_prune_by_policy(tmp_path: Path, policy: Policy) -> None:
    # The default policy with a two-year default period: records of early 2024 that
    # disclosed nothing longer-lived are due by now.
    text = Path(policy.source).read_text()
    old = "  default:\n    period: 3y\n"
    assert old in text
    policy_path = tmp_path / "agents.yaml"
    policy_path.write_text(text.replace(old, "  default:\n    period: 2y\n"))
    short = load_policy(policy_path)
    with database("sqlite", tmp_path) as url:
        env: Env = build_log_env(url, tmp_path)
        res = env.run("prune", "--by-policy", "--dry-run", "--policy", str(policy_path))
        assert res.exit_code == 0, res.output
        with open_store(url, create=False) as store:
            due = due_by_retention(store, short.retention)
        assert due, "records of early 2024 past the two-year default are due by now"
        for period, n in due.items():
            assert f"{n} record bodies are past a retention period of {period}" in res.output
        assert env.run("list", "--limit", "1000", "--format", "json").exit_code == 0
        res = env.run("prune", "--by-policy", "--yes", "--policy", str(policy_path))
        assert res.exit_code == 0, res.output
        assert f"pruned {sum(due.values())} record bodies" in res.output
        assert env.run("verify").exit_code == 0
        listed = orjson.loads(env.run("list", "--limit", "1000", "--format", "json").output)
        assert len(listed) == len(env.records) - sum(due.values())
        res = env.run("prune", "--by-policy", "--before", "2024-01-10", "--yes")
        assert res.exit_code == 2 and "not both" in res.output
