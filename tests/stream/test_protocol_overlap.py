"""The batch protocol's round trips and its overlapping of batches, with the fakes of
``test_protocol``: one acknowledged send per writing step, and the next batch decided while
the previous one's outputs are out, without any marker, record or agent message getting
ahead of what it must follow."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from gateway.consent import ConsentState
from gateway.runtime import Core
from gateway.stream.consent_store import OFFSET_KEY
from gateway.stream.protocol import Item
from tests.stream.test_protocol import (
    CHANGELOG,
    PARTITION,
    FakeSender,
    Harness,
    Msg,
    _publisher_signers,  # noqa: F401 -- the autouse fixture signing the messages
    kind,
    scenario_messages,
)

# Which batch a send belongs to: set around ``submit``, inherited by the batch's task.
BATCH: contextvars.ContextVar[str] = contextvars.ContextVar("batch", default="?")


class StepSender(FakeSender):
    """The fake sender, also writing each step's send and its acknowledgement to the
    effects, named by batch: ("send", batch, kind) and ("done", batch, kind)."""

    def __init__(self, h: Harness):
        super().__init__(h.broker)
        self.effects = h.effects

    async def send(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None, *, what: str
    ) -> None:
        if not items:
            return
        k = kind(items[0][0])
        self.effects.append(("send", BATCH.get(), k))
        await super().send(items, partitions, what=what)
        self.effects.append(("done", BATCH.get(), k))


def harness(core: Core, **kwargs: Any) -> Harness:
    h = Harness(core, **kwargs)
    h.protocol.sender = StepSender(h)
    return h


def at(h: Harness, *effect: Any) -> int:
    assert effect in h.effects, f"no {effect} in the effects"
    return h.effects.index(effect)


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


async def submit(h: Harness, name: str, messages: Sequence[Msg]) -> asyncio.Future[list[Msg]]:
    token = BATCH.set(name)
    try:
        done = await h.protocol.submit(messages)
    finally:
        BATCH.reset(token)
    h.effects.append(("decided", name))
    return done


def halves() -> tuple[list[Msg], list[Msg]]:
    """The scenario in two batches, cut after C-1002's consent change (its order is in
    the second: decided right only against the first's change)."""
    messages = scenario_messages()
    cut = next(
        i + 1
        for i, m in enumerate(messages)
        if orjson.loads(m.value or b"")["event_type"] == "consent.changed"
    )
    return messages[:cut], messages[cut:]


def offline(core: Core, messages: Sequence[Msg]) -> list[tuple[str, str, str | None]]:
    states: dict[str, ConsentState] = {}
    return [
        (r.record_id, r.outcome, r.reason)
        for m in messages
        for r in core.pipeline.process(m.value or b"", states, verify=False).records
    ]


def decisions(h: Harness) -> list[tuple[str, str, str | None]]:
    return [(r.record_id, r.outcome, r.reason) for r in h.records()]


def assert_batch_order(h: Harness, name: str, messages: Sequence[Msg]) -> None:
    """One batch's steps: each writing step sent after the one before it is acknowledged,
    its marker after its agent messages are, its input acknowledged last."""
    assert at(h, "done", name, "log") < at(h, "send", name, "disclose")
    assert at(h, "done", name, "disclose") < at(h, "send", name, "changelog")
    acks = [h.effects.index(("ack", m.partition, m.offset)) for m in messages]
    assert at(h, "done", name, "changelog") < min(acks)


# --- round trips ---------------------------------------------------------------------------


def test_a_batch_takes_one_acknowledged_send_per_writing_step(core: Core) -> None:
    h = harness(core)
    h.run(scenario_messages())
    assert attempts(h) == ["log", "disclose", "changelog"]


def test_forwarded_events_go_in_the_log_send(core: Core) -> None:
    # Half the customers' events on the wrong partition: records, dead letters and forwards
    # in one send (they were two sends, one after the other's acknowledgement).
    wrong = {c: (1 - p if i % 2 else p) for i, (c, p) in enumerate(PARTITION.items())}
    messages = scenario_messages(wrong)
    h = harness(core)
    assert h.run(messages) == messages
    assert attempts(h) == ["log", "disclose", "changelog"]
    logged = {s.topic for s in h.broker.acked if s.kind == "log"}
    assert "t.subjects" in logged and "t.disclosures" in logged


def test_the_marker_is_never_sent_before_the_agent_messages_are_acknowledged(
    core: Core,
) -> None:
    # Even with the broker refusing the agent messages for a while.
    h = harness(core)
    h.broker.refuse = {"disclose": 3}
    h.run(scenario_messages())
    markers = [
        i
        for i, e in enumerate(h.effects)
        if e[0] == "sent" and e[1] == "changelog" and e[2].key == OFFSET_KEY.encode()
    ]
    assert markers
    assert h.index("acked", "disclose", last=True) < min(markers)


# --- overlapping batches ---------------------------------------------------------------------


def test_the_next_batch_is_decided_while_the_previous_one_is_out_and_the_order_holds(
    core: Core,
) -> None:
    first, second = halves()

    async def scenario_run() -> tuple[list[Msg], list[Msg]]:
        await h.consent.restore([0, 1])
        a = await submit(h, "A", first)
        b = await submit(h, "B", second)
        return await a, await b

    async def slow_changelog(k: str) -> None:
        if k == "changelog":
            await asyncio.sleep(0.02)  # a round trip that takes its time

    h = harness(core)
    h.broker.before = slow_changelog
    done_a, done_b = asyncio.run(asyncio.wait_for(scenario_run(), 10))
    assert (done_a, done_b) == (first, second)
    # B was decided while A's changelog was out: the two overlapped; but only once A's
    # agent messages were acknowledged.
    assert at(h, "done", "A", "disclose") < at(h, "decided", "B")
    assert at(h, "decided", "B") < at(h, "done", "A", "changelog")
    assert_batch_order(h, "A", first)
    assert_batch_order(h, "B", second)
    # B publishes after A's agent messages are acknowledged, and writes its changelog
    # (its markers) after A's is acknowledged.
    assert at(h, "done", "A", "disclose") < at(h, "send", "B", "log")
    assert at(h, "done", "A", "changelog") < at(h, "send", "B", "changelog")
    # B was decided against A's consent changes: as the core decides the whole scenario.
    assert decisions(h) == offline(core, first + second)
    # The markers move forward only, and the table holds B's changes.
    markers = [
        (s.partition, orjson.loads(s.value)["input_offset"])
        for s in h.broker.acked
        if s.kind == "changelog" and s.key == OFFSET_KEY.encode()
    ]
    for p in (0, 1):
        got = [o for q, o in markers if q == p]
        assert got == sorted(got)
        assert h.consent.applied(p) == max(m.offset for m in second if m.partition == p)
    assert not h.protocol._held


def test_while_the_previous_changelog_is_not_acknowledged_no_later_marker_goes_out(
    core: Core,
) -> None:
    # The broker refuses changelog writes: A's consent changes and marker are not
    # durable. B may be logged and disclosed (decided against A's changes, which a restart
    # decides again from the same state), but its marker must wait for A's.
    first, second = halves()
    h = harness(core)
    h.broker.refuse = {"changelog": 10**6}

    async def scenario_run() -> None:
        await h.consent.restore([0, 1])
        await submit(h, "A", first)
        await submit(h, "B", second)
        await asyncio.sleep(0.1)
        for f in list(h.protocol._flights):
            assert f.task is not None
            f.task.cancel()
        await asyncio.sleep(0)

    asyncio.run(asyncio.wait_for(scenario_run(), 10))
    assert ("send", "B", "changelog") not in h.effects
    assert not [s for s in h.broker.acked if s.kind == "changelog"]
    assert h.acks() == []
    # A restarted worker (nothing of the changelog durable) decides both again to the
    # same records.
    again = Harness(core)
    again.run(first + second)
    assert decisions(again) == decisions(h)


def test_a_partition_restored_while_a_batch_is_out_is_decided_after_it(core: Core) -> None:
    # A's consent changes are held aside for B; a restore of A's partitions (a rebalance)
    # makes them void: B waits for A, which is not acknowledged, and is decided against
    # the restored state (the fake changelog's: empty).
    first, second = halves()
    h = harness(core)

    async def slow_changelog(k: str) -> None:
        if k == "changelog":
            await asyncio.sleep(0.02)  # A is still out when B comes

    h.broker.before = slow_changelog

    async def scenario_run() -> list[Msg]:
        await h.consent.restore([0, 1])
        a = await submit(h, "A", first)
        await asyncio.sleep(0.005)  # A's agent messages acknowledged, its changelog out
        assert not a.done()
        await h.consent.restore([0, 1])
        b = await submit(h, "B", second)
        assert a.done()
        assert await a == []
        return await b

    assert asyncio.run(asyncio.wait_for(scenario_run(), 10)) == second
    assert at(h, "done", "A", "changelog") < at(h, "decided", "B")
    assert sorted(h.acks()) == sorted((m.partition, m.offset) for m in second)
    assert decisions(h)[len(offline(core, first)) :] == offline(core, second)


def test_a_failed_batch_fails_the_next_submit(core: Core) -> None:
    first, second = halves()
    h = harness(core)

    class Broken(Exception):
        pass

    async def broken(k: str) -> None:
        if k == "disclose":
            raise Broken("a bug")

    h.broker.before = broken

    async def scenario_run() -> None:
        await h.consent.restore([0, 1])
        a = await submit(h, "A", first)
        with pytest.raises(Broken):
            await submit(h, "B", second)
        with pytest.raises(Broken):
            await a
        with pytest.raises(Broken):
            await h.protocol.submit(second)

    # A later batch's marker would cover A's events: nothing is decided after a failure.
    asyncio.run(asyncio.wait_for(scenario_run(), 10))
    assert h.acks() == []
    assert not [s for s in h.broker.acked if s.topic == CHANGELOG]
    assert ("decided", "B") not in h.effects


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
