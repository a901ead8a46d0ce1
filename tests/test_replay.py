"""The offline replay, as a function: it handles every line as the stream worker does,
dead-lettering what the pipeline rejects or fails on, and carries on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.dev.samples import scenario
from gateway.events import parse_event
from gateway.replay import replay
from gateway.runtime import Core


def test_a_line_whose_processing_raises_is_dead_lettered_and_the_replay_carries_on(
    core: Core, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = scenario()[:12]
    crashing = next(e for e in events[3:] if core.engine.subscribers.get(e["event_type"]))
    crash_line = events.index(crashing) + 1
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    real = core.engine.decide
    # Agents' copies carry no event id: the crashing event is known by its content.
    crashing_data = parse_event(orjson.dumps(crashing)).body["data"]

    def decide(agent: str, event_type: str, body: dict[str, Any], *rest: Any, **kw: Any) -> Any:
        if body["data"] == crashing_data and body["subject"] == crashing["subject"]:
            raise KeyError(crashing["subject"]["customer_id"])  # a bug quoting event data
        return real(agent, event_type, body, *rest, **kw)

    monkeypatch.setattr(core.engine, "decide", decide)
    summary = replay(core.pipeline, src, tmp_path / "out")

    (dead,) = [
        orjson.loads(x) for x in (tmp_path / "out" / "deadletter.jsonl").read_bytes().splitlines()
    ]
    assert dead["line"] == crash_line
    assert (dead["reason"], dead["error"]) == ("internal_error", "internal error: KeyError")
    assert dead["event_id"] == crashing["event_id"]
    assert crashing["subject"]["customer_id"] not in orjson.dumps(dead).decode()
    assert (summary.lines, summary.events, summary.dead_letters) == (12, 11, 1)
    recorded = {
        orjson.loads(x)["event_id"]
        for x in (tmp_path / "out" / "records.jsonl").read_bytes().splitlines()
    }
    # Every line after the failing one was processed too.
    after = [
        e["event_id"] for e in events[crash_line:] if core.engine.subscribers.get(e["event_type"])
    ]
    assert after and set(after) <= recorded
    assert crashing["event_id"] not in recorded
    assert orjson.loads((tmp_path / "out" / "summary.json").read_bytes())["dead_letters"] == 1
