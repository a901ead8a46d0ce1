"""Retention as the policy file declares it: periods, the rule a category falls under, the
period of a record or a consent state, and what ``policy explain`` shows."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.errors import PolicyError
from gateway.policy import Policy, parse_period, parse_policy
from gateway.policy_tools import retention_summary

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "agents.yaml").read_text()


def test_periods_are_never_shorter_than_the_calendar_time_they_name() -> None:
    assert parse_period("90d") == timedelta(days=90)
    assert parse_period("2w") == timedelta(days=14)
    assert parse_period("13m") == timedelta(days=13 * 31)
    assert parse_period("1y") == timedelta(days=366)
    assert parse_period("7y") == timedelta(days=2557)  # 7 calendar years hold 2557 days at most
    for bad in ("7", "0d", "7 years", "-1y", "1.5y", "12h"):
        with pytest.raises(ValueError, match="a number and a unit"):
            parse_period(bad)


def test_retention_for_takes_the_longest_period_of_the_most_specific_rules(
    policy: Policy,
) -> None:
    """ "We will retain your Personal Information for as long as necessary to provide you with
    use of the Site, complete and record orders, or as needed to comply with our legal
    obligations or enforce our agreements.\""""
    r = policy.retention
    assert r.retention_for([]) == parse_period(r.default.period)
    assert r.retention_for(["user.name"]) == r.default.duration
    assert r.rule_for("user.financial.credit_card")[0] == "user.financial"
    browsing = r.retention_for(["user.behavior.browsing_history"])
    orders = r.retention_for(["user.behavior.purchase_history.order_amount"])
    assert browsing < r.default.duration < orders
    # A record about an order and a page view is kept as long as the order needs.
    assert r.retention_for(["user.behavior.browsing_history", "user.unique_id.order_number"]) == (
        orders
    )
    # An opt-out outlives everything else kept about the customer.
    prefs = r.retention_for(["user.privacy_preferences"])
    assert all(prefs >= rule.duration for rule in r.categories.values())


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("      period: 13m\n", "      period: 13 months\n", "a number and a unit"),
        ("    user.location:\n", "    user.locaton:\n", "'user.locaton' is not a data category"),
        ("    basis: provide use of the Site and the Account\n", "    basis: ''\n", "basis"),
    ],
)
def test_a_bad_retention_rule_names_its_line(old: str, new: str, message: str) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "agents.yaml")
    assert message in str(e.value)
    assert e.value.line == text[: text.index(new)].count("\n") + 1


def test_explain_shows_retention(policy: Policy) -> None:
    lines = retention_summary(policy, "order.placed")
    assert any(line.startswith("retention 7y (user.behavior.purchase_history: ") for line in lines)
    assert any("user.health_and_medical.vision_correction" in line for line in lines)
    r = CliRunner().invoke(
        main,
        [
            "policy",
            "explain",
            "--policy",
            str(ROOT / "agents.yaml"),
            "--agent",
            "analytics",
            "--event",
            "site.visit",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "retention 13m (user.behavior.browsing_history" in r.output
    assert "consent state" in r.output
