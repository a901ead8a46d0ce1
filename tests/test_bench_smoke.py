"""`gateway bench` cannot rot: a short run of the real harness (sane numbers and JSON, no
timing thresholds), and the hot-path shortcuts checked against what they replace."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from gateway.bench import report
from gateway.bench.infra import policy_text
from gateway.bench.latency import percentiles
from gateway.consent import ConsentState
from gateway.engine import _Acc, _apply
from gateway.events import parse_event
from gateway.policy import parse_policy
from gateway.records import _NS, DecisionRecord, _uuid5
from gateway.runtime import Core
from gateway.samples import random_events, scenario
from gateway.transforms import Ctx


def _events() -> list[bytes]:
    return [orjson.dumps(e) for e in [*scenario(), *random_events(600, seed=3, customers=40)]]


# --- hot-path shortcuts: same results as the code they stand in for ----------------------


def test_record_json_is_byte_for_byte_pydantics(core: Core) -> None:
    states: dict[str, ConsentState] = {}
    records = [r for raw in _events() for r in core.pipeline.process(raw, states).records]
    odd = [datetime(2026, 1, 1, 0, 0, 0, 500000, UTC), datetime(2026, 1, 1, 1, 2, 3, 7),
           datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
           datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-3, seconds=15))),
           datetime(999, 1, 1, tzinfo=UTC)]
    records += [r.model_copy(update={"occurred_at": d, "recorded_at": d}) for d in odd
                for r in records[:3]]
    records += [DecisionRecord.from_json(r.to_json()) for r in records[:50]]
    assert len(records) > 1000
    for r in records:
        assert r.to_json() == orjson.dumps(r.model_dump(mode="json"),
                                           option=orjson.OPT_SORT_KEYS)


def test_trusted_records_equal_validated_ones(core: Core) -> None:
    out = core.pipeline.process(orjson.dumps(scenario()[2]), {})
    for r in out.records:
        assert DecisionRecord.model_validate(r.model_dump()) == r
        assert r.model_fields_set == set(DecisionRecord.model_fields)


def test_uuid5_shortcut_matches_uuid() -> None:
    for i in range(5000):
        name = f"event\x1fevt-{i}-{i * 7919:x}\x1fagent-{i % 9}"
        assert _uuid5(name) == str(uuid.uuid5(_NS, name))


def test_compiled_plans_do_what_interpreted_plans_do(core: Core) -> None:
    engine = core.engine
    compared = 0
    for raw in _events():
        event = parse_event(raw)
        for agent in engine.subscribers.get(event.event_type, ()):
            ctx = Ctx(engine.pseudonym_keys[agent], event.reference_date)
            for opt_in in (False, True):
                for marketing in (False, True):
                    plan = engine.full_plan(agent, event.event_type, sensitive_opt_in=opt_in,
                                            marketing_allowed=marketing)
                    want_acc, got_acc = _Acc(), _Acc()
                    want = _apply(plan.steps, event.body, want_acc, ctx)
                    assert plan.apply is not None
                    got = plan.apply(event.body, ctx, got_acc.sent, got_acc.transformed,
                                     got_acc.removed, got_acc.c_sent, got_acc.c_trans,
                                     got_acc.c_removed)
                    assert orjson.dumps(got) == orjson.dumps(want)  # same keys, same order
                    for slot in ("sent", "transformed", "removed"):
                        assert list(getattr(got_acc, slot)) == list(getattr(want_acc, slot))
                    for slot in ("c_sent", "c_trans", "c_removed"):
                        assert getattr(got_acc, slot) == getattr(want_acc, slot)
                    compared += 1
    assert compared > 1000


# --- harness pieces ------------------------------------------------------------------------


@pytest.mark.parametrize("agents", [1, 3, 5, 8])
def test_policy_variants_load(agents: int) -> None:
    policy = parse_policy(policy_text("bench-x", agents))
    assert len(policy.agents) == agents
    assert len({a.topic for a in policy.agents.values()}) == agents
    assert all(a.topic.startswith("bench-x.agent.") for a in policy.agents.values())


def test_percentiles() -> None:
    p = percentiles([float(x) for x in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["p100"]) == (50.0, 95.0, 99.0, 100.0)
    assert math.isnan(percentiles([])["p99"])


# --- the harness itself, briefly, on the embedded broker ------------------------------------


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_bench_quick_run_writes_sane_results(tmp_path: Path) -> None:
    from gateway.cli.bench import bench_cmd

    out = tmp_path / "results.json"
    res = CliRunner().invoke(bench_cmd, ["--quick", "--out", str(out),
                                         "--workdir", str(tmp_path / "work")])
    assert res.exit_code == 0, res.output + repr(res.exception)
    r = orjson.loads(out.read_bytes())
    t = r["throughput"]
    for name in ("bare", "faust_per_event", "gateway"):
        assert t[name]["events_per_s"] > 0 and t[name]["peak_rss"] > 0, name
    assert t["gateway"]["us_per_event"]["decide"] > 0
    assert t["gateway"]["us_per_event"]["batch"] >= t["gateway"]["us_per_event"]["decide"]
    assert t["ratio_vs_bare"] == pytest.approx(
        t["gateway"]["events_per_s"] / t["bare"]["events_per_s"])
    lat = r["latency"]
    assert lat["messages"] > 0
    assert 0 < lat["to_agent_topic_ms"]["p50"] <= lat["to_agent_topic_ms"]["p99"]
    # The worker's own phase timings came through its metrics.
    assert lat["batches"]["batches"] > 0 and lat["batches"]["decide_ms"] > 0
    assert lat["batches"]["log_ms"] > 0 and lat["batches"]["disclose_ms"] > 0
    b = r["broker"]
    assert 0 < b["produce_ack_ms"]["p50"] <= b["produce_ack_ms"]["p99"]
    assert [row["fetch_max_wait_ms"] for row in b["fetch_wait"]] == [5, 10, 25, 100]
    core = r["core"]
    assert core["events_per_s"] > 0 and core["decisions_per_event"] > 0
    assert all(v >= 0 for v in core["us_per_event"].values())
    assert r["memory"]["rss_at_end"] > 0
    assert {row["target"].split(" ")[0] for row in r["targets"]} >= {"gateway", "p99", "RSS"}
    assert "Targets" in res.output and "gateway worker" in res.output
    # The table renders from the file alone, too.
    with (tmp_path / "table.txt").open("w") as fh:
        report.render(r, Console(file=fh, width=160))
    assert "Targets" in (tmp_path / "table.txt").read_text()
