"""Subject partitions: the gateway's choice for a customer id equals the default
partitioner of kafka-python (and so of the Java client) for that id as the record key."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import DefaultPartitioner

from gateway.routing import murmur2, subject_partition


class Cluster:
    """The three questions kafka-python's partitioner asks of cluster metadata, for one
    topic ``t`` whose partitions are all available."""

    def __init__(self, partitions: int):
        self.partitions = set(range(partitions))

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self.partitions


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 12, 64])
def test_subject_partition_is_kafka_pythons_default_partitioner(partitions: int) -> None:
    meta = Cluster(partitions)
    partitioner = DefaultPartitioner()
    rnd = random.Random(partitions)
    ids = [f"C-{n}" for n in range(2000)] + [
        "".join(rnd.choice("AB-_.:xyz0123456789é漢") for _ in range(rnd.randrange(1, 40)))
        for _ in range(2000)
    ]
    for cid in ids:
        key = cid.encode()
        expected = partitioner.partition("t", cid, key, None, None, meta)
        assert subject_partition(cid, partitions) == expected, cid


@settings(max_examples=500)
@given(data=st.binary(max_size=64))
def test_murmur2_agrees_with_kafka_python(data: bytes) -> None:
    from kafka.partitioner.default import murmur2 as reference

    assert murmur2(data) & 0x7FFFFFFF == reference(data) & 0x7FFFFFFF
    assert murmur2(data) & 0xFFFFFFFF == reference(data) & 0xFFFFFFFF


def test_known_java_values() -> None:
    # Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's own unit test).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def test_partitions_must_be_positive() -> None:
    with pytest.raises(ValueError):
        subject_partition("C-1", 0)
