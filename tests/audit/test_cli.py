"""``gateway audit reconcile`` against the embedded broker: a clean deployment passes (also
with events the workers had to route to their customer's partition), a forged agent
message and a record without the workers' MAC are failures, an unreachable broker is an
error (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from gateway.cli.audit import audit
from gateway.runtime import Core


def _cli_env(env: object) -> dict[str, str]:
    e = env.env()  # type: ignore[attr-defined]
    return {k: v for k, v in e.items() if k.startswith("GATEWAY_")}


@pytest.mark.broker
def test_cli_reports_no_gaps_then_finds_a_forged_message(deployment: object) -> None:
    from kafka import KafkaProducer

    from gateway.sdk.publisher import PRODUCER_DEFAULTS

    env = deployment
    runner = CliRunner()
    res = runner.invoke(audit, ["reconcile", "--format", "json", "--wait", "60"], env=_cli_env(env))
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.output)
    assert data["ok"] and data["summary"]["pending"] == 0
    # Every message on an agent topic is a per-event disclosure, an aggregate table or an
    # erasure notice (sent by the sink, its record straight in the log).
    counts = data["counts"]
    notices = sum(1 for r in env.ledger_records() if r.outcome == "erasure_notice")
    assert counts["expected_messages"] > 0
    assert counts["agent_messages"] == (
        counts["expected_messages"] + counts.get("aggregate_records", 0) + notices
    ), counts
    assert counts["records_checked"] == counts["expected_records"] + notices > 0, counts

    settings = env.settings  # type: ignore[attr-defined]
    p = KafkaProducer(bootstrap_servers=[settings.bootstrap_servers], **PRODUCER_DEFAULTS)
    p.send(env.agent_topic("email"), key=b"forged", value=b"not from the gateway")  # type: ignore[attr-defined]
    p.flush()
    p.close()
    res = runner.invoke(audit, ["reconcile"], env=_cli_env(env))
    assert res.exit_code == 1, res.output
    assert "GAP unlogged: 1" in res.output and "GAPS FOUND" in res.output


@pytest.mark.broker
def test_cli_names_an_unreachable_broker(tmp_path: Path, core: Core) -> None:
    from tests.stream.helpers import free_port

    env = {
        "GATEWAY_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "GATEWAY_POLICY_PATH": str(core.settings.policy_path),
        "GATEWAY_KEYS_DIR": str(core.settings.keys_dir),
        "GATEWAY_LEDGER_URL": f"sqlite:///{tmp_path / 'none.db'}",
    }
    res = CliRunner().invoke(
        audit, ["reconcile", "--connect-timeout", "1"], env={**env, "PATH": os.environ["PATH"]}
    )
    assert res.exit_code == 2, res.output
    assert "error:" in res.output


@pytest.mark.broker
def test_cli_accepts_routed_events_and_fails_on_a_record_without_the_workers_mac(
    deployment: object,
) -> None:
    from kafka import KafkaProducer

    from gateway.dev.samples import scenario
    from gateway.routing import subject_partition
    from gateway.sdk.publisher import PRODUCER_DEFAULTS

    env = deployment
    settings = env.settings  # type: ignore[attr-defined]
    p = KafkaProducer(bootstrap_servers=[settings.bootstrap_servers], **PRODUCER_DEFAULTS)
    # The same customers' events again, under new ids, each on a partition other than
    # its customer's: every one is forwarded and decided on the subject partition.
    events = [dict(e, event_id=e["event_id"] + "-r") for e in scenario()]
    for e in events:
        raw = orjson.dumps(e)
        home = subject_partition(e["subject"]["customer_id"], settings.partitions)
        p.send(
            settings.input_topic,
            value=raw,
            key=b"not-the-customer",
            partition=(home + 1) % settings.partitions,
            headers=env.signed_headers(raw),  # type: ignore[attr-defined]
        )
    p.flush()
    runner = CliRunner()
    res = runner.invoke(audit, ["reconcile", "--format", "json", "--wait", "60"], env=_cli_env(env))
    assert res.exit_code == 0, res.output
    data = orjson.loads(res.output)
    assert data["ok"] and data["summary"]["pending"] == 0, data
    assert data["counts"]["events"] == 2 * len(events)

    # A record written straight to the disclosure topic (a copy of a real one, edited):
    # no workers' MAC, so the audit fails whatever the record says.
    from gateway.records import DecisionRecord

    rec = next(
        r
        for _, v, _ in env.topic(settings.disclosure_topic)  # type: ignore[attr-defined]
        if v
        and b"erasure_request" not in v
        and (r := DecisionRecord.from_json(v)).outcome == "withheld"
    )
    forged = rec.model_copy(update={"outcome": "disclosed", "reason": None})
    p.send(settings.disclosure_topic, key=rec.subject_ref.encode(), value=forged.to_json())
    p.flush()
    p.close()
    res = runner.invoke(audit, ["reconcile"], env=_cli_env(env))
    assert res.exit_code == 1, res.output
    assert "GAP bad_mac: 1" in res.output and "GAPS FOUND" in res.output


def test_cli_takes_the_pending_deadline_and_timeouts_as_options() -> None:
    res = CliRunner().invoke(audit, ["reconcile", "--help"])
    assert res.exit_code == 0
    for option in ("--pending-deadline", "--read-timeout", "--connect-timeout", "--wait"):
        assert option in res.output
