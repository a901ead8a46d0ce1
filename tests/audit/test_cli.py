"""``gateway audit reconcile`` against the embedded broker: a clean deployment passes, a
forged agent message is a gap, an unreachable broker is an error (exit 2)."""

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
    assert data["counts"]["expected_messages"] == data["counts"]["agent_messages"] > 0

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
