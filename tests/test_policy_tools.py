"""gateway policy check / explain / diff, as functions and through the CLI."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from gateway.policy import Policy, parse_policy
from gateway.policy_tools import (
    check_policy,
    conditions_summary,
    diff_policies,
    explain,
    offline_engine,
)

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "agents.yaml").read_text()


def test_default_policy_has_no_errors(policy: Policy) -> None:
    findings = check_policy(policy)
    assert [f for f in findings if f.level == "error"] == []


def test_check_reports_analytics_allowed_raw_email() -> None:
    bad = parse_policy(
        GOOD.replace(
            "          user.device.user_agent: send\n",
            "          user.device.user_agent: send\n          user.contact.email: send\n",
            1,
        )
    )
    errors = [f for f in check_policy(bad) if f.level == "error"]
    assert len(errors) == 1
    assert errors[0].agent == "analytics"
    assert "direct identifiers raw" in errors[0].message
    assert "user.contact.email" in errors[0].message


def test_check_reports_reseller_open_to_consumers_and_sensitive_marketing() -> None:
    bad = parse_policy(
        GOOD.replace("      subject_types: [business]\n", "", 1).replace(
            "          user.job_title: send\n          user.contact.organization: send\n"
            "          user.contact.email: send\n          user.contact.phone_number: send\n",
            "          user.job_title: send\n          user.contact.organization: send\n"
            "          user.contact.email: send\n          user.contact.phone_number: send\n"
            "          user.health_and_medical: send\n",
            1,
        )
    )
    msgs = [f.message for f in check_policy(bad) if f.level == "error"]
    assert any("consumers never" in m for m in msgs)
    assert any(
        "sensitive data (user.health_and_medical) may never be used for marketing" in m
        for m in msgs
    )


def test_explain_gives_every_field_and_why(policy: Policy) -> None:
    engine = offline_engine(policy)
    rows = {r.path: r for r in explain(engine, "shipping", "order.placed")}
    assert rows["data.shipping_address.street"].outcome == "sent"
    assert rows["data.total"].outcome == "removed"
    assert "dropped by the policy" in rows["data.total"].why
    assert rows["data.prescription.right_eye.sphere"].outcome == "removed"
    assert rows["data.payment.card.token"].why == "category not permitted for any active purpose"
    analytics = {r.path: r for r in explain(engine, "analytics", "site.visit")}
    assert analytics["data.device.ip"].outcome == "removed"
    assert analytics["data.device.user_agent"].outcome == "sent"
    orders = {r.path: r for r in explain(engine, "analytics", "order.placed")}
    assert orders["data.shipping_address.postal_code"].treatment == "zip3()"
    assert orders["subject.customer_id"].outcome == "removed"
    email = {r.path: r for r in explain(engine, "email", "order.placed")}
    assert "opt-in" in email["data.prescription.left_eye.axis"].why
    assert email["data.prescription.left_eye.axis"].outcome == "removed"
    opted = {r.path: r for r in explain(engine, "email", "order.placed", sensitive_opt_in=True)}
    assert opted["data.prescription.left_eye.axis"].outcome == "sent"


def test_explain_shows_what_an_erasure_notice_carries_and_why(policy: Policy) -> None:
    engine = offline_engine(policy)
    # An aggregate agent holds nothing about a subject: no notice at all.
    assert explain(engine, "analytics", "erasure.requested") == []
    assert any(
        "no erasure notice" in line
        for line in conditions_summary(policy, "analytics", "erasure.requested")
    )
    rows = explain(engine, "payments", "erasure.requested")
    assert [r.path for r in rows] == [
        "notice",
        "event_id",
        "requested_at",
        "subject.customer_id",
        "instruction",
    ]
    by_path = {r.path: r for r in rows}
    assert by_path["instruction"].outcome == "sent"
    assert by_path["instruction"].purpose == "essential.legal_obligation"
    # The subject as the agent knows it: payments only ever got a pseudonym ...
    subject = by_path["subject.customer_id"]
    assert (subject.outcome, subject.treatment) == ("transformed", "pseudonym()")
    assert subject.purpose == "essential.service.payment_processing"
    # ... shipping never got a customer number at all, so its notice names none.
    shipping = {r.path: r for r in explain(engine, "shipping", "erasure.requested")}
    assert shipping["subject.customer_id"].outcome == "removed"
    assert "names no subject" in shipping["subject.customer_id"].why
    lines = conditions_summary(policy, "shipping", "erasure.requested")
    assert any("erasure notice" in line for line in lines)
    assert not any("always withheld" in line for line in lines)


def test_cli_explains_an_erasure_notice() -> None:
    r = CliRunner().invoke(
        main,
        [
            "policy",
            "explain",
            "--policy",
            str(ROOT / "agents.yaml"),
            "--agent",
            "shipping",
            "--event",
            "erasure.requested",
        ],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    assert "instruction" in r.output and "essential.legal_obligation" in r.output
    assert "erasure notice" in r.output and "always withheld" not in r.output


def test_diff_shows_new_flows() -> None:
    old = parse_policy(GOOD)
    new = parse_policy(
        GOOD.replace(
            "          user.contact.address.postal_code: {transform: zip3}\n",
            "          user.contact.address.postal_code: send\n"
            "          user.contact.email: {transform: pseudonym}\n",
            1,
        )
    )
    changes = diff_policies(old, new)
    kinds = {(c.kind, c.agent, c.event_type, c.path) for c in changes}
    assert (
        "more_revealing",
        "analytics",
        "order.placed",
        "data.shipping_address.postal_code",
    ) in kinds
    assert ("new_flow", "analytics", "order.placed", "data.contact_email") in kinds
    assert all(c.agent == "analytics" for c in changes)
    assert diff_policies(old, old) == []


def test_cli_policy_commands(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["policy", "check", "--policy", str(ROOT / "agents.yaml"), "--keys-dir", str(tmp_path)],
    )
    assert r.exit_code == 0, r.output
    assert "0 error(s)" in r.output
    r = runner.invoke(
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
    assert "data.device.user_agent" in r.output and "contribute" in r.output
    r = runner.invoke(
        main,
        ["policy", "explain", "--policy", str(ROOT / "agents.yaml"), "--agent", "analytics"],
        env={"COLUMNS": "200"},
    )
    assert r.exit_code == 0, r.output
    for words in ("windows: tumbling 5m, 1h", "k=10", "table pages", "order_total", "zip3"):
        assert words in r.output, words
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.replace(
            "user.device.user_agent: send",
            "user.device.user_agent: send\n          user.name: send",
            1,
        )
    )
    r = runner.invoke(main, ["policy", "check", "--policy", str(bad)])
    assert r.exit_code == 1 and "direct identifiers raw" in r.output
    r = runner.invoke(
        main, ["policy", "diff", str(ROOT / "agents.yaml"), str(bad), "--fail-on-new-flow"]
    )
    assert r.exit_code == 1 and "new_flow" in r.output
    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD.replace("role: service_provider", "role: pal", 1))
    r = runner.invoke(main, ["policy", "check", "--policy", str(broken)])
    assert r.exit_code == 2
    assert f"{broken}:" in r.output and "role" in r.output
    r = runner.invoke(main, ["schemas", "export", str(tmp_path / "s")])
    assert r.exit_code == 0 and len(list((tmp_path / "s").glob("*.json"))) == 11


def test_check_refuses_marketing_on_contract_and_warns_without_with_consent() -> None:
    on_contract = parse_policy(
        GOOD.replace(
            "        legal_basis: legitimate_interests\n        with_consent: consent\n",
            "        legal_basis: contract\n",
            1,
        )
    )
    errors = [f.message for f in check_policy(on_contract) if f.level == "error"]
    assert any("marketing never rests on contract" in m for m in errors)
    no_consent = parse_policy(GOOD.replace("        with_consent: consent\n", "", 1))
    warnings = [f.message for f in check_policy(no_consent) if f.level == "warning"]
    assert any("without with_consent: consent" in m for m in warnings)


def test_explain_and_conditions_show_objection_and_the_legal_bases(policy: Policy) -> None:
    engine = offline_engine(policy)
    objected = explain(engine, "analytics", "site.visit", objection=True)
    assert {r.outcome for r in objected} == {"removed"}
    lines = conditions_summary(policy, "email", "customer.registered")
    assert any(
        "legal basis legitimate_interests; consent once the subject opted in" in line
        and "stops on opt-out, objection or GPC" in line
        for line in lines
    )
    assert any(
        "stops on objection" in line
        for line in conditions_summary(policy, "analytics", "site.visit")
    )
    reseller = conditions_summary(policy, "reseller", "customer.registered")
    assert any("needs the marketing opt-in" in line for line in reseller)
    assert any("not yet known" in line for line in reseller)


def test_diff_shows_what_changes_in_an_aggregate_agents_tables() -> None:
    old = parse_policy(GOOD)
    new = parse_policy(
        GOOD.replace("      k: 10", "      k: 6", 1)
        .replace("windows: [5m, 1h]", "windows: [1m, 1h]", 1)
        .replace("dimensions: [zip3]", "dimensions: [zip3, hour]", 1)
    )
    got = {(c.kind, c.path) for c in diff_policies(old, new)}
    assert got == {
        ("more_revealing", "aggregate.k"),
        ("more_revealing", "aggregate.windows"),
        ("more_revealing", "aggregate.tables.order_zip3"),
    }
    back = {(c.kind, c.path) for c in diff_policies(new, old)}
    # A window not published before adds figures (even a longer one): more, not less.
    assert back == {
        ("less_revealing", "aggregate.k"),
        ("more_revealing", "aggregate.windows"),
        ("less_revealing", "aggregate.tables.order_zip3"),
    }
