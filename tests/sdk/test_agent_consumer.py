"""The agent consumer never loses a message to the agent's own mistake: what its keys
cannot open stops it uncommitted; what is the message's own fault is reported and skipped;
idle time counts from the partition assignment."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.crypto import AgentPrivateKey, Sealer
from gateway.errors import KeyMismatch
from gateway.keys import load_signing_key
from gateway.sdk import AgentConsumer, Received, Rejected
from tests.sdk.conftest import AgentKeys, Topic

pytestmark = pytest.mark.broker


def consume(agent_keys: AgentKeys, topic: Topic, key: Path, *extra: str) -> Result:
    return CliRunner().invoke(
        main,
        [
            "agent",
            "consume",
            "shipping",
            "--key",
            str(key),
            "--gateway-key",
            str(agent_keys.gateway_key),
            "--topic",
            topic.name,
            "--group",
            topic.group,
            "--bootstrap",
            topic.broker.bootstrap,
            "--idle-timeout",
            "2",
            *extra,
        ],
    )


def test_a_wrong_key_stops_before_anything_is_committed(
    agent_keys: AgentKeys, topic: Topic
) -> None:
    topic.produce(agent_keys.sealed(25))
    r = consume(agent_keys, topic, agent_keys.wrong_key)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    assert "error: cannot open" in r.stderr
    # The key envelope names the agent key it was sealed for: the error says which.
    assert "was sealed for agent key" in r.stderr and "private key" in r.stderr, r.stderr
    assert f"run again with the right keys in group '{topic.group}'" in r.stderr
    assert topic.committed() == {}

    r = consume(agent_keys, topic, agent_keys.key)
    assert r.exit_code == 0, r.output
    got = [orjson.loads(line) for line in r.stdout.splitlines()]
    assert sorted(g["disclosure_id"] for g in got) == [f"d-{i:04d}" for i in range(25)]
    assert "25 received, 25 decrypted, 0 duplicate(s) dropped, 0 rejected" in r.stderr
    assert sum(topic.committed().values()) == 25


def test_a_wrong_gateway_key_stops_too(agent_keys: AgentKeys, one_partition: Topic) -> None:
    one_partition.produce(agent_keys.sealed(3))
    other_gateway = agent_keys.dir.parent / "other-gateway"
    from gateway.keys import init_gateway_keys

    init_gateway_keys(other_gateway)
    reader = type(agent_keys.reader())(
        "shipping", agent_keys.key, other_gateway / "gateway-signing.pub"
    )
    with (
        pytest.raises(KeyMismatch, match="claims gateway key") as e,
        AgentConsumer(
            reader,
            one_partition.broker.bootstrap,
            one_partition.name,
            group_id=one_partition.group,
            idle_timeout=2,
        ) as c,
    ):
        list(c)
    assert e.value.position == f"{one_partition.name}[0]@0"
    assert one_partition.committed() == {}


def test_a_key_problem_mid_stream_commits_exactly_what_was_handled(
    agent_keys: AgentKeys, one_partition: Topic
) -> None:
    # The gateway starts sealing for another public key (the agent's was replaced in
    # agents.yaml, but this agent still runs with its old private key).
    signing = load_signing_key(agent_keys.dir / "gateway-signing.key")
    replaced = Sealer("shipping", AgentPrivateKey.generate().public_key(), signing)
    one_partition.produce(agent_keys.sealed(5) + agent_keys.sealed(5, 5, replaced))
    seen: list[str] = []
    with pytest.raises(KeyMismatch) as e:  # noqa: SIM117 - the error leaves both blocks
        with AgentConsumer(
            agent_keys.reader(),
            one_partition.broker.bootstrap,
            one_partition.name,
            group_id=one_partition.group,
            idle_timeout=2,
        ) as c:
            for msg in c:
                seen.append(msg.disclosure_id)
    assert seen == [f"d-{i:04d}" for i in range(5)]
    assert e.value.position == f"{one_partition.name}[0]@5"
    assert one_partition.committed() == {0: 5}
    assert c.stats.received == 6 and c.stats.decrypted == 5


def test_foreign_malformed_and_altered_messages_are_reported_and_skipped(
    agent_keys: AgentKeys, one_partition: Topic
) -> None:
    signing = load_signing_key(agent_keys.dir / "gateway-signing.key")
    payments = Sealer("payments", AgentPrivateKey.generate().public_key(), signing)
    good = agent_keys.sealed(4)
    altered = orjson.loads(good[1])
    altered["header"]["disclosure_id"] = "d-9999"  # same data key, header changed
    bad_sig = copy.deepcopy(orjson.loads(good[2]))
    bad_sig["envelope"]["created_at"] = "2020-01-01T00:00:00Z"  # envelope no longer signed
    values = [
        good[0],
        agent_keys.sealed(1, 10, payments)[0],  # addressed to another agent
        b"not a message",  # malformed
        orjson.dumps(altered),
        good[1],
        orjson.dumps(bad_sig),
        good[2],
        good[2],  # a duplicate
        good[3],
    ]
    one_partition.produce(values)
    rejected: list[Rejected] = []
    with AgentConsumer(
        agent_keys.reader(),
        one_partition.broker.bootstrap,
        one_partition.name,
        group_id=one_partition.group,
        idle_timeout=2,
        on_rejected=rejected.append,
    ) as c:
        got = [m.disclosure_id for m in c]
    assert got == ["d-0000", "d-0001", "d-0002", "d-0003"]
    assert [r.position.rsplit("@", 1)[1] for r in rejected] == ["1", "2", "3", "5"]
    assert rejected[0].foreign and "addressed to agent 'payments'" in rejected[0].error
    assert "malformed message" in rejected[1].error
    assert rejected[2].error.startswith("altered or damaged: ciphertext does not authenticate")
    assert rejected[3].error.startswith("altered or damaged: ")
    assert c.stats.summary() == "9 received, 5 decrypted, 1 duplicate(s) dropped, 4 rejected"
    assert one_partition.committed() == {0: 9}


def test_idle_timeout_counts_from_the_assignment(agent_keys: AgentKeys, topic: Topic) -> None:
    topic.produce(agent_keys.sealed(3))
    # A new group is assigned partitions after seconds; a 1 s idle timeout counted from
    # the start would end before the first fetch.
    with AgentConsumer(
        agent_keys.reader(),
        topic.broker.bootstrap,
        topic.name,
        group_id=topic.group,
        idle_timeout=1,
    ) as c:
        got = list(c)
    assert len(got) == 3
    assert c.assigned_after is not None and c.assigned_after > 1


def test_the_last_message_counts_as_handled_only_when_the_block_ends_cleanly(
    agent_keys: AgentKeys, one_partition: Topic
) -> None:
    one_partition.produce(agent_keys.sealed(3))

    def consumer() -> AgentConsumer:
        return AgentConsumer(
            agent_keys.reader(),
            one_partition.broker.bootstrap,
            one_partition.name,
            group_id=one_partition.group,
            idle_timeout=2,
        )

    class Boom(Exception):
        pass

    with pytest.raises(Boom), consumer() as c:
        for _ in c:
            raise Boom  # handling the first message failed
    assert one_partition.committed() == {}

    with consumer() as c:
        for msg in c:
            first: Received = msg
            break
    assert first.disclosure_id == "d-0000"
    assert one_partition.committed() == {0: 1}

    with consumer() as c:
        rest = [m.disclosure_id for m in c]
    assert rest == ["d-0001", "d-0002"]
    assert one_partition.committed() == {0: 3}
