"""The batch lane's overrides of faust's consumer that the end-to-end stream tests cannot
reach in their time: faust's stuck-partition check after minutes of a deliberate pause."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from gateway.stream.lane import LaneConsumerThread


def test_faust_does_not_report_a_partition_paused_for_alignment_as_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[TP] = []

    def verify(self: Any, now: float, tp: TP) -> None:
        checked.append(tp)

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "verify_event_path", verify)
    paused, running = TP("events", 1), TP("events", 0)
    thread = object.__new__(LaneConsumerThread)
    thread.consumer = SimpleNamespace(_paused_partitions={paused})  # type: ignore[assignment]
    thread.verify_event_path(0.0, paused)
    thread.verify_event_path(0.0, running)
    assert checked == [running]
