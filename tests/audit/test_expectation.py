"""The replay: what each input must have caused, decided by the pipeline the worker runs."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.audit import TopicMessage, expect
from gateway.runtime import Core


def test_an_event_the_pipeline_crashes_on_is_expected_as_an_internal_error_dead_letter(
    core: Core, sample: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker dead-letters an event whose processing raises, with the reason
    # "internal_error"; the replay must expect exactly that dead letter.
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the core")

    monkeypatch.setattr(core.pipeline.engine, "decide", crash)
    raw = orjson.dumps(sample["order.placed"])
    (exp,) = expect(core.pipeline, [TopicMessage("in.events", 0, 0, b"C-1", raw)])
    assert exp.event_id is None and not exp.records
    assert exp.dead_letter == "internal_error"


def test_each_partition_is_replayed_in_offset_order_against_its_own_consent(
    core: Core, sample: dict[str, dict[str, Any]]
) -> None:
    # An opt-out on partition 1 does not reach an event on partition 0, as in the worker,
    # which keeps consent state per input partition; within a partition, offset order
    # (not the order given) decides.
    optout = dict(sample["consent.changed"], data={"marketing": "opt_out"})
    profile = sample["customer.updated"]
    cid = profile["subject"]["customer_id"]
    optout["subject"] = dict(profile["subject"])
    raw_out, raw_profile = orjson.dumps(optout), orjson.dumps(profile)

    def email_outcome(inputs: list[TopicMessage]) -> str:
        got = [e for e in expect(core.pipeline, inputs) if e.event_id == profile["event_id"]]
        (outcome,) = {d.outcome for d in got[0].records.values() if d.agent == "email"}
        return outcome

    k = cid.encode()
    alone = email_outcome([TopicMessage("in", 0, 5, k, raw_profile)])
    other_partition = email_outcome(
        [TopicMessage("in", 1, 0, k, raw_out), TopicMessage("in", 0, 5, k, raw_profile)]
    )
    same_partition_later = email_outcome(
        [TopicMessage("in", 0, 9, k, raw_out), TopicMessage("in", 0, 5, k, raw_profile)]
    )
    same_partition_before = email_outcome(
        [TopicMessage("in", 0, 5, k, raw_profile), TopicMessage("in", 0, 1, k, raw_out)]
    )
    assert alone == other_partition == same_partition_later == "disclosed"
    assert same_partition_before == "withheld"
