"""The batch protocol driven without faust or a broker: a fake input consumer, a fake broker
behind the real retry loop, a consent store restored from a fake changelog, and the real
policy core deciding. Every effect is written to one list, in the order it happens, and
the tests read the order from it."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest

from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.erasure import is_erasure_request
from gateway.integrity import WorkerMac
from gateway.publishers import PublisherSigner
from gateway.records import DecisionRecord
from gateway.routing import subject_partition
from gateway.runtime import Core, demo_signers
from gateway.settings import Settings
from gateway.stream import metrics
from gateway.stream.consent_store import OFFSET_KEY, ConsentStore, Restored
from gateway.stream.protocol import BatchProtocol, Item
from gateway.stream.sender import send_acknowledged
from gateway.stream.signatures import MIN_PARALLEL, SignatureChecks
from tests.stream.faulty_worker import faulty_protocol

INPUT = "t.events"
SUBJECTS = "t.subjects"
DISCLOSURES = "t.disclosures"
DEAD = "t.dead"
CHANGELOG = "t.consent-changelog"
PARTITIONS = 2

# Each customer's events go to its subject partition, as a publisher keying by customer id
# with a murmur2 client (the SDK) puts them: decided where they are read.
CUSTOMERS = ("C-1001", "C-1002", "C-1003", "C-1004", "C-1005", "B-2001", "B-2002")
PARTITION = {c: subject_partition(c, PARTITIONS) for c in CUSTOMERS}


@dataclass(frozen=True)
class Msg:
    partition: int
    offset: int
    value: bytes | None
    topic: str = INPUT
    headers: list[tuple[str, bytes]] | None = None


def signed(partition: int, offset: int, value: bytes, topic: str = INPUT) -> Msg:
    """An input message as the event's demo publisher signs it."""
    event_type = orjson.loads(value)["event_type"]
    return Msg(partition, offset, value, topic, _SIGNERS[event_type].headers(value))


# The demo publishers' signers of the session's key store (the ``core`` fixture's).
_SIGNERS: dict[str, PublisherSigner] = {}


@pytest.fixture(autouse=True)
def _publisher_signers(core: Core, settings: Settings) -> None:
    _SIGNERS.update(demo_signers(settings, core.policy))


def scenario_messages(partition_of: dict[str, int] | None = None) -> list[Msg]:
    """The bundled scenario as signed input messages, each on its customer's partition
    (or the one ``partition_of`` says): offsets counted per partition."""
    where = partition_of or PARTITION
    next_offset = {0: 0, 1: 0}
    out = []
    for e in scenario():
        p = where[e["subject"]["customer_id"]]
        out.append(signed(p, next_offset[p], orjson.dumps(e)))
        next_offset[p] += 1
    return out


def kind(topic: str) -> str:
    """Which step an output belongs to, by its topic."""
    if topic in (DISCLOSURES, DEAD, SUBJECTS):
        return "log"
    if topic == CHANGELOG:
        return "changelog"
    return "disclose"


@dataclass
class Sent:
    kind: str
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]] | None = None


class FakeConsumer:
    def __init__(self, effects: list[tuple[Any, ...]], assigned: set[int]):
        self.effects = effects
        self.assigned = assigned

    def assigned_partitions(self) -> set[int]:
        return set(self.assigned)

    def acknowledge(self, message: Msg) -> None:
        self.effects.append(("ack", message.partition, message.offset))


@dataclass
class FakeBroker:
    """Takes sends for the real retry loop (:func:`send_acknowledged`): an item is
    ``sent`` when an attempt carries it and ``acked`` when the broker acknowledges it.
    ``refuse[kind]`` attempts of a kind are refused (every item of them, or every other
    one with ``refuse_half``); ``before`` runs before each attempt."""

    effects: list[tuple[Any, ...]]
    refuse: dict[str, int] = field(default_factory=dict)
    refuse_half: bool = False
    before: Callable[[str], Awaitable[None]] | None = None
    acked: list[Sent] = field(default_factory=list)

    async def attempt(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None
    ) -> list[BaseException | None]:
        k = kind(items[0][0])
        if self.before is not None:
            await self.before(k)
        refusing = self.refuse.get(k, 0) > 0
        if refusing:
            self.refuse[k] -= 1
        results: list[BaseException | None] = []
        carried = []
        for i, (topic, key, value, headers) in enumerate(items):
            sent = Sent(
                kind(topic), topic, key, value, partitions[i] if partitions else None, headers
            )
            carried.append(sent)
            self.effects.append(("sent", sent.kind, sent))
            refused = refusing and (not self.refuse_half or i % 2 == 0)
            results.append(TimeoutError("no acknowledgement") if refused else None)
        await asyncio.sleep(0)  # the acknowledgements arrive later
        for sent, r in zip(carried, results, strict=True):
            if r is None:
                self.effects.append(("acked", sent.kind, sent))
                self.acked.append(sent)
        return results


class FakeSender:
    def __init__(self, broker: FakeBroker):
        self.broker = broker

    async def send(
        self, items: Sequence[Item], partitions: Sequence[int | None] | None = None, *, what: str
    ) -> None:
        await send_acknowledged(
            self.broker.attempt, items, partitions, what=what, first_delay=0.001
        )


class Harness:
    def __init__(
        self,
        core: Core,
        *,
        assigned: set[int] | None = None,
        applied: dict[int, int] | None = None,
        states: dict[int, dict[str, bytes | ConsentState]] | None = None,
        protocol: type[BatchProtocol[Any]] = BatchProtocol,
        signatures: SignatureChecks | None = None,
    ):
        self.effects: list[tuple[Any, ...]] = []
        self.applied = applied or {}
        self.states = states or {}
        self.consumer = FakeConsumer(self.effects, assigned if assigned is not None else {0, 1})
        self.broker = FakeBroker(self.effects)
        self.consent = ConsentStore(self.read_changelog)
        self.decided: list[bytes] = []
        self.protocol = protocol(
            core.pipeline,
            self.consumer,
            self.consent,
            FakeSender(self.broker),
            disclosure_topic=DISCLOSURES,
            dead_letter_topic=DEAD,
            changelog_topic=CHANGELOG,
            subjects_topic=SUBJECTS,
            partitions=PARTITIONS,
            mac=WorkerMac(core.worker_key),
            signatures=signatures,
        )

    async def read_changelog(self, partitions: list[int]) -> Restored:
        return Restored(
            {p: dict(self.states.get(p, {})) for p in partitions},
            {p: self.applied[p] for p in partitions if p in self.applied},
        )

    async def process(
        self, messages: Sequence[Msg], *, restore: Sequence[int] = (0, 1)
    ) -> list[Msg]:
        await self.consent.restore(restore)
        return await self.protocol.process(messages)

    def run(self, messages: Sequence[Msg], **kwargs: Any) -> list[Msg]:
        # Bounded: a protocol waiting for a partition it will never get fails here.
        return asyncio.run(asyncio.wait_for(self.process(messages, **kwargs), 10))

    # --- reading the effects ---------------------------------------------------------------

    def index(self, what: str, k: str | None = None, *, last: bool = False) -> int:
        found = [i for i, e in enumerate(self.effects) if e[0] == what and (k is None or e[1] == k)]
        assert found, f"no {what} {k or ''} in the effects"
        return found[-1] if last else found[0]

    def acks(self) -> list[tuple[int, int]]:
        return [(e[1], e[2]) for e in self.effects if e[0] == "ack"]

    def records(self) -> list[DecisionRecord]:
        return [
            DecisionRecord.from_json(s.value)
            for s in self.broker.acked
            if s.topic == DISCLOSURES and not is_erasure_request(s.headers)
        ]


def assert_protocol_order(h: Harness) -> None:
    """Log acknowledged before any agent message is sent; changelog after every agent
    message is acknowledged; input acknowledged after the changelog is."""
    assert h.index("acked", "log", last=True) < h.index("sent", "disclose")
    assert h.index("acked", "disclose", last=True) < h.index("sent", "changelog")
    assert h.index("acked", "changelog", last=True) < h.index("ack")
    assert all(e[0] == "ack" for e in h.effects[h.index("ack") :])


def retries() -> float:
    return metrics.REGISTRY.get_sample_value("gateway_send_retries_total") or 0.0


# --- order of effects ------------------------------------------------------------------------


def test_a_batch_logs_then_discloses_then_writes_the_changelog_then_acknowledges(
    core: Core,
) -> None:
    h = Harness(core)
    messages = scenario_messages()
    done = h.run(messages)
    assert done == messages
    assert_protocol_order(h)
    assert sorted(h.acks()) == sorted((m.partition, m.offset) for m in messages)
    # What was sent is what the offline core decides for the same events.
    states: dict[str, ConsentState] = {}
    want = [core.pipeline.process(m.value or b"", states, verify=False) for m in messages]
    assert [r.record_id for r in h.records()] == [r.record_id for o in want for r in o.records]
    disclosed = {s.value for s in h.broker.acked if s.kind == "disclose"}
    assert len(disclosed) == sum(len(o.messages) for o in want) > 0


def test_the_order_check_catches_disclosure_before_logging(core: Core) -> None:
    # The faulty worker's protocol of the chaos test: the check above must fail on it.
    h = Harness(core, protocol=faulty_protocol(disclose_before_log=True, pause=0))
    h.run(scenario_messages())
    with pytest.raises(AssertionError):
        assert_protocol_order(h)


def test_consent_changes_go_to_their_events_partition_then_the_applied_marker(
    core: Core,
) -> None:
    h = Harness(core)
    messages = scenario_messages()
    h.run(messages)
    changelog = [s for s in h.broker.acked if s.kind == "changelog"]
    states = [s for s in changelog if s.key != OFFSET_KEY.encode()]
    markers = [s for s in changelog if s.key == OFFSET_KEY.encode()]
    assert {s.key.decode() for s in states if s.key} >= {"C-1002", "C-1003", "B-2001"}
    for s in states:
        assert s.key is not None and s.partition == PARTITION[s.key.decode()]
    # Each partition's marker comes after its states and names its last offset.
    last = {p: max(m.offset for m in messages if m.partition == p) for p in (0, 1)}
    assert sorted((s.partition, orjson.loads(s.value)["input_offset"]) for s in markers) == [
        (0, last[0]),
        (1, last[1]),
    ]
    assert changelog.index(markers[0]) > max(changelog.index(s) for s in states)
    # Taken into the table once acknowledged.
    assert h.consent.applied(0) == last[0] and h.consent.applied(1) == last[1]
    assert h.consent.get(0, "C-1002") is not None


def test_no_consent_change_no_changelog(core: Core) -> None:
    h = Harness(core)
    h.run([Msg(0, 7, b"{not json")])  # dead-lettered: no state changes
    assert [s.kind for s in h.broker.acked] == ["log"]
    assert h.acks() == [(0, 7)]
    assert h.consent.applied(0) == 7


# --- retries -------------------------------------------------------------------------------


def test_refused_sends_are_retried_until_acknowledged_and_the_order_holds(core: Core) -> None:
    h = Harness(core)
    h.broker.refuse = {"log": 2, "disclose": 3, "changelog": 1}
    messages = scenario_messages()
    before = retries()
    h.run(messages)
    assert retries() - before == 6
    assert_protocol_order(h)
    sent = [e[2] for e in h.effects if e[0] == "sent"]
    assert {(s.topic, s.value) for s in sent} == {(s.topic, s.value) for s in h.broker.acked}
    assert len(h.acks()) == len(messages)


def test_only_the_unacknowledged_items_are_sent_again(core: Core) -> None:
    h = Harness(core)
    h.broker.refuse = {"log": 1}
    h.broker.refuse_half = True
    h.run(scenario_messages())
    log_sends = [e[2] for e in h.effects if e[0] == "sent" and e[1] == "log"]
    logged = [s for s in h.broker.acked if s.kind == "log"]
    # The first attempt carried them all; the retry only the refused half.
    assert len(log_sends) == len(logged) + (len(logged) + 1) // 2
    assert len({s.value for s in logged}) == len(logged)
    assert_protocol_order(h)


def test_nothing_is_acknowledged_while_the_broker_refuses(core: Core) -> None:
    async def scenario_run() -> tuple[list[tuple[int, int]], list[Msg]]:
        h = Harness(core)
        h.broker.refuse = {"disclose": 10_000}
        task = asyncio.create_task(h.process(scenario_messages()))
        await asyncio.sleep(0.3)
        acks_meanwhile = h.acks()
        assert not task.done()
        h.broker.refuse = {}
        return acks_meanwhile, await task

    acks_meanwhile, done = asyncio.run(scenario_run())
    assert acks_meanwhile == []
    assert len(done) == len(scenario_messages())


# --- rebalancing -----------------------------------------------------------------------------


def test_a_partition_revoked_during_the_batch_is_not_acknowledged(core: Core) -> None:
    h = Harness(core)

    async def revoke_1(k: str) -> None:
        if k == "disclose":
            h.consent.revoke([1])

    h.broker.before = revoke_1
    messages = scenario_messages()
    done = h.run(messages)
    assert done == [m for m in messages if m.partition == 0]
    assert sorted(h.acks()) == sorted((m.partition, m.offset) for m in done)
    # Partition 1's state is gone with it, not re-created by the batch.
    assert h.consent.applied(1) == -1 and h.consent.get(1, "C-1003") is None


def test_a_partition_restored_during_the_batch_keeps_the_restored_state(core: Core) -> None:
    h = Harness(core)
    restored = ConsentState()

    async def restore_1(k: str) -> None:
        if k == "changelog":
            h.states = {1: {"C-1003": orjson.dumps(restored.to_dict())}}
            h.applied = {1: 2}
            await h.consent.restore([1])

    h.broker.before = restore_1
    messages = scenario_messages()
    done = h.run(messages)
    assert {m.partition for m in done} == {0}
    assert all(p == 0 for p, _ in h.acks())
    assert h.consent.applied(1) == 2
    assert h.consent.get(1, "C-1003") == restored


def test_messages_of_a_partition_no_longer_assigned_are_left_alone(core: Core) -> None:
    h = Harness(core, assigned={0})
    messages = scenario_messages()
    done = h.run(messages, restore=(0,))
    assert done == [m for m in messages if m.partition == 0]
    assert {p for p, _ in h.acks()} == {0}
    customers = {r.subject_ref for r in h.records()}
    assert customers == {core.pipeline.subject_ref(c) for c, p in PARTITION.items() if p == 0}


def test_a_batch_waits_until_its_partitions_are_restored(core: Core) -> None:
    async def scenario_run() -> tuple[list[tuple[Any, ...]], list[Msg]]:
        h = Harness(core)
        await h.consent.restore([0])
        task = asyncio.create_task(h.protocol.process(scenario_messages()))
        await asyncio.sleep(0.3)
        meanwhile = list(h.effects)
        assert not task.done()
        await h.consent.restore([1])
        return meanwhile, await asyncio.wait_for(task, 5)

    meanwhile, done = asyncio.run(scenario_run())
    assert meanwhile == []
    assert len(done) == len(scenario_messages())


# --- redelivery ----------------------------------------------------------------------------


def test_events_at_or_below_the_applied_marker_are_acknowledged_not_decided(
    core: Core,
) -> None:
    messages = scenario_messages()
    h = Harness(core, applied={0: 4})
    done = h.run(messages)
    skipped = [m for m in messages if m.partition == 0 and m.offset <= 4]
    assert len(skipped) == 5
    assert done == [m for m in messages if m not in skipped]
    # Acknowledged first, before anything else happened.
    assert h.effects[: len(skipped)] == [("ack", 0, m.offset) for m in skipped]
    decided = {r.event_id for r in h.records()}
    assert decided
    for m in skipped:
        assert orjson.loads(m.value or b"")["event_id"] not in decided
    assert h.protocol.stats["processed"] == len(messages)


def test_a_batch_wholly_applied_sends_nothing(core: Core) -> None:
    messages = [m for m in scenario_messages() if m.partition == 0]
    h = Harness(core, applied={0: 100})
    assert h.run(messages) == []
    assert h.acks() == [(0, m.offset) for m in messages]
    assert not [e for e in h.effects if e[0] != "ack"]


# --- odd input -------------------------------------------------------------------------------


def test_a_message_without_a_value_is_dead_lettered_not_a_crash(core: Core) -> None:
    h = Harness(core)
    assert h.run([Msg(0, 0, None)]) == [Msg(0, 0, None)]
    (dead,) = [s for s in h.broker.acked if s.topic == DEAD]
    # A tombstone carries no publisher headers: refused before anything reads it.
    assert orjson.loads(dead.value)["reason"] == "unsigned"
    assert h.acks() == [(0, 0)]


# --- subject routing -------------------------------------------------------------------------


def forwarded_messages(h: Harness) -> list[Msg]:
    """What the broker took for the re-partition topic, as the messages a worker then reads
    from it: offsets counted per partition."""
    next_offset: dict[int, int] = {}
    out = []
    for s in h.broker.acked:
        if s.topic != SUBJECTS:
            continue
        assert s.partition is not None
        offset = next_offset.get(s.partition, 0)
        next_offset[s.partition] = offset + 1
        out.append(Msg(s.partition, offset, s.value, SUBJECTS, s.headers))
    return out


def test_events_on_another_partition_are_forwarded_then_decided_as_the_core_decides(
    core: Core,
) -> None:
    # A publisher whose partitioner disagrees with murmur2 for every customer (as
    # librdkafka's default does for most): nothing may be decided where it was read.
    wrong = {c: 1 - p for c, p in PARTITION.items()}
    messages = scenario_messages(wrong)
    h = Harness(core)
    assert h.run(messages) == messages
    assert not h.records() and not [s for s in h.broker.acked if s.kind == "disclose"]
    forwarded = forwarded_messages(h)
    assert len(forwarded) == len(messages)
    for m in forwarded:  # each on its customer's partition, keyed by customer id
        cid = orjson.loads(m.value or b"")["subject"]["customer_id"]
        assert m.partition == PARTITION[cid]
    # The input is acknowledged once the forwards are acknowledged, before nothing else.
    assert h.index("acked", "log", last=True) < h.index("ack")

    h2 = Harness(core)
    assert h2.run(forwarded) == forwarded
    assert_protocol_order(h2)
    states: dict[str, ConsentState] = {}
    want = [core.pipeline.process(m.value or b"", states, verify=False) for m in forwarded]
    assert [r.record_id for r in h2.records()] == [r.record_id for o in want for r in o.records]
    # The progress marker written is the re-partition topic's, not the input's.
    markers = {s.key for s in h2.broker.acked if s.kind == "changelog" and s.key.startswith(b"#")}
    assert markers == {b"#offset:forwarded"}
    assert h2.consent.applied(PARTITION["C-1001"], "forwarded") >= 0
    assert h2.consent.applied(PARTITION["C-1001"], "input") == -1


def test_a_message_on_the_re_partition_topic_without_a_worker_mac_is_dead_lettered(
    core: Core,
) -> None:
    # Someone with access to the broker writes a signed event straight to the
    # re-partition topic, with a made-up or copied MAC: not decided.
    h = Harness(core)
    forwarded = forwarded_messages_of(
        core, scenario_messages({c: 1 - p for c, p in PARTITION.items()})
    )
    genuine = forwarded[0]
    headers = [(k, v) for k, v in genuine.headers or () if k != "gateway-mac"]
    tampered = orjson.loads(genuine.value or b"")
    tampered["subject"]["type"] = "business"
    forged = [
        Msg(genuine.partition, 0, genuine.value, SUBJECTS, headers),  # no MAC
        Msg(genuine.partition, 1, orjson.dumps(tampered), SUBJECTS, genuine.headers),  # copied
    ]
    assert h.run(forged) == forged
    dead = [orjson.loads(s.value) for s in h.broker.acked if s.topic == DEAD]
    assert [d["reason"] for d in dead] == ["forged_forward", "forged_forward"]
    assert not h.records()


def forwarded_messages_of(core: Core, messages: list[Msg]) -> list[Msg]:
    h = Harness(core)
    h.run(messages)
    return forwarded_messages(h)


def test_a_forwarded_event_for_another_partition_is_dead_lettered_misrouted(core: Core) -> None:
    genuine = forwarded_messages_of(
        core, scenario_messages({c: 1 - p for c, p in PARTITION.items()})
    )[0]
    # A worker configured with another partition count would forward it elsewhere.
    elsewhere = Msg(1 - genuine.partition, 0, genuine.value, SUBJECTS, genuine.headers)
    h = Harness(core)
    h.run([elsewhere])
    dead = [orjson.loads(s.value) for s in h.broker.acked if s.topic == DEAD]
    assert [d["reason"] for d in dead] == ["misrouted"]


def test_the_collector_is_off_while_a_batch_is_decided_and_on_again_after(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    real = core.pipeline.decide

    def decide(*args: Any, **kwargs: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(core.pipeline, "decide", decide)
    assert gc.isenabled()
    h = Harness(core)
    h.run(scenario_messages())
    assert seen and not any(seen)
    assert gc.isenabled()


# --- signatures checked ahead, on threads -------------------------------------------------


def tampered(messages: list[Msg]) -> list[Msg]:
    """Every fifth message altered after signing, every seventh unsigned, every ninth signed
    by a publisher the policy does not declare: what a batch of real traffic may hold."""
    out = []
    for i, m in enumerate(messages):
        if i % 5 == 1:
            assert m.value is not None
            m = replace(m, value=m.value.replace(b'"event_id":"', b'"event_id":"x', 1))
        elif i % 7 == 2:
            m = replace(m, headers=None)
        elif i % 9 == 3:
            m = replace(
                m,
                headers=[
                    (n, b"mallory" if n == "gateway-publisher" else v) for n, v in m.headers or []
                ],
            )
        out.append(m)
    return out


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_signatures_checked_ahead_decide_exactly_what_admission_alone_decides(
    core: Core, threads: int
) -> None:
    messages = tampered(scenario_messages() * 2)  # a batch above the threads' minimum
    messages = [replace(m, offset=i) for i, m in enumerate(messages)]
    assert len(messages) >= MIN_PARALLEL
    alone, ahead = Harness(core), Harness(core, signatures=SignatureChecks(core.pipeline, threads))
    alone.run(messages)
    ahead.run(messages)

    def sent(h: Harness) -> list[tuple[str, str, Any]]:
        # Sealed messages differ by their nonces (and so do the records' digests of them),
        # records and dead letters by the time they were made: what went where, and
        # everything else they say, may not.
        out = []
        for s in h.broker.acked:
            if s.kind == "disclose":
                out.append((s.kind, s.topic, None))
                continue
            doc = orjson.loads(s.value)
            if isinstance(doc, dict):
                for moment in ("recorded_at", "received_at", "payload_digest"):
                    doc.pop(moment, None)
            out.append((s.kind, s.topic, doc))
        return out

    assert sent(ahead) == sent(alone)
    reasons = [orjson.loads(s.value)["reason"] for s in ahead.broker.acked if s.topic == DEAD]
    assert {"bad_signature", "unsigned", "unknown_publisher"} <= set(reasons)
