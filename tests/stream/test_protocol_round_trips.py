"""The batch protocol's round trips, with the fakes of ``test_protocol``: one acknowledged
send per writing step (forwarded events in the log's), no marker before the agent messages
are acknowledged, and batches cut to the latency budget."""

from __future__ import annotations

from gateway.runtime import Core
from gateway.stream.consent_store import OFFSET_KEY
from tests.stream.test_protocol import (
    PARTITION,
    Harness,
    _publisher_signers,  # noqa: F401 -- the autouse fixture signing the messages
    scenario_messages,
)


def attempts(h: Harness) -> list[str]:
    """The kind of every send attempt the broker took, in order."""
    out: list[str] = []
    last = None
    for e in h.effects:
        # Items of one attempt are written one after the other, then acknowledged.
        if e[0] == "sent" and last != "sent":
            out.append(e[1])
        last = e[0]
    return out


# --- round trips ---------------------------------------------------------------------------


def test_a_batch_takes_one_acknowledged_send_per_writing_step(core: Core) -> None:
    h = Harness(core)
    h.run(scenario_messages())
    assert attempts(h) == ["log", "disclose", "changelog"]


def test_forwarded_events_go_in_the_log_send(core: Core) -> None:
    # Half the customers' events on the wrong partition: records, dead letters and forwards
    # in one send (they were two sends, one after the other's acknowledgement).
    wrong = {c: (1 - p if i % 2 else p) for i, (c, p) in enumerate(PARTITION.items())}
    messages = scenario_messages(wrong)
    h = Harness(core)
    assert h.run(messages) == messages
    assert attempts(h) == ["log", "disclose", "changelog"]
    logged = {s.topic for s in h.broker.acked if s.kind == "log"}
    assert "t.subjects" in logged and "t.disclosures" in logged


def test_the_marker_is_never_sent_before_the_agent_messages_are_acknowledged(
    core: Core,
) -> None:
    # Even with the broker refusing the agent messages for a while.
    h = Harness(core)
    h.broker.refuse = {"disclose": 3}
    h.run(scenario_messages())
    markers = [
        i
        for i, e in enumerate(h.effects)
        if e[0] == "sent" and e[1] == "changelog" and e[2].key == OFFSET_KEY.encode()
    ]
    assert markers
    assert h.index("acked", "disclose", last=True) < min(markers)


# --- the latency budget --------------------------------------------------------------------


def test_the_batch_limit_follows_the_cost_of_deciding(core: Core) -> None:
    h = Harness(core)
    assert h.protocol.batch_limit(0.02, 500) == 500  # nothing decided yet
    h.run(scenario_messages())
    cost = h.protocol.decide_cost
    assert cost is not None and cost > 0
    assert h.protocol.batch_limit(cost * 10.5, 500) == 10
    assert h.protocol.batch_limit(cost * 10_000, 500) == 500
    assert h.protocol.batch_limit(cost / 10, 500) == 1
