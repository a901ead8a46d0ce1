"""Which subject partition a customer's events are decided on.

A customer's consent state lives on exactly one partition of the gateway: the partition
Kafka's default partitioner (Java clients, kafka-python) would pick for the customer id as
the record key. Publishers that key their events by customer id with such a client already
put them there; any other event is routed there by the gateway before it is decided.
"""

from __future__ import annotations

from typing import Final

_M: Final = 0x5BD1E995
_SEED: Final = 0x9747B28C
_MASK: Final = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data`` (as ``org.apache.kafka.common.utils.Utils.murmur2``),
    as a signed 32-bit integer."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length & ~3
    for i in range(0, whole, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


# murmur2 in Python costs ~1 µs for a customer id (0.1 µs cached), paid for every event;
# the same customers recur, so the hashes are kept (bounded: cleared when full, like the
# pipeline's other per-subject caches, so memory stays flat). Hashes only: a customer id
# maps to a number, which is not worth protecting from the process itself.
_HASHES: dict[str, int] = {}
_HASHES_MAX: Final = 100_000


def subject_partition(customer_id: str, partitions: int) -> int:
    """The partition of ``partitions`` that decides ``customer_id``'s events: the default
    partitioner's choice for the UTF-8 customer id as key (``murmur2 & 0x7fffffff % n``)."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    h = _HASHES.get(customer_id)
    if h is None:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.clear()
        h = _HASHES[customer_id] = murmur2(customer_id.encode("utf-8")) & 0x7FFFFFFF
    return h % partitions
