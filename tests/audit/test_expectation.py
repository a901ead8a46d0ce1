"""The admission: each input taken as the worker takes it (the publisher's signature over
the exact bytes included), and the admitted events grouped per customer whatever partition
they were published on."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.audit import TopicMessage, expect
from gateway.audit.expectation import Histories
from gateway.runtime import Core, demo_signers


def signed(core: Core, raw: bytes) -> tuple[tuple[str, bytes], ...]:
    etype = orjson.loads(raw)["event_type"]
    return tuple(demo_signers(core.settings, core.policy)[etype].headers(raw))


def test_unsigned_and_forged_inputs_are_expected_as_dead_letters(
    core: Core, sample: dict[str, dict[str, Any]]
) -> None:
    raw = orjson.dumps(sample["order.placed"])
    other = orjson.dumps({**sample["order.placed"], "event_id": "evt-other-0001"})
    good, unsigned, forged = expect(
        core.pipeline,
        [
            TopicMessage("in", 0, 0, b"k", raw, signed(core, raw)),
            TopicMessage("in", 0, 1, b"k", raw, ()),
            # another event's signature on these bytes
            TopicMessage("in", 0, 2, b"k", raw, signed(core, other)),
        ],
    )
    assert good.event is not None and good.event_id == sample["order.placed"]["event_id"]
    assert (unsigned.event, unsigned.dead_letter) == (None, "unsigned")
    assert (forged.event, forged.dead_letter) == (None, "bad_signature")


def test_events_are_grouped_per_customer_whatever_their_partition(
    core: Core, sample: dict[str, dict[str, Any]]
) -> None:
    optout = dict(sample["consent.changed"], data={"marketing": "opt_out"})
    profile = sample["customer.updated"]
    optout["subject"] = dict(profile["subject"])
    raws = [orjson.dumps(optout), orjson.dumps(profile), orjson.dumps(profile)]
    inputs = [
        TopicMessage("in", p, o, None, r, signed(core, r))
        for (p, o), r in zip([(1, 0), (0, 5), (2, 3)], raws, strict=True)
    ]
    hists = Histories.of(expect(core.pipeline, inputs))
    (hist,) = hists.by_customer.values()
    assert hist.customer_id == profile["subject"]["customer_id"]
    assert len(hist.events) == 2  # the republished profile update is one event
    (change,) = [c for pairs in hist.changes.values() for c, _ in pairs]
    assert change.registers == (("marketing", "opt_out"),)
    copy = hists.copy(next(fp for fp, c in hist.events.items() if len(c.inputs) == 2))
    assert copy is not None and copy.partitions == {0, 2}
