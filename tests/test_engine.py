"""The decision engine on its own: compiled plans against the plan interpreter, and the
erasure notice against what ``explain`` says it carries."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent import ConsentState, Stamp
from gateway.dev.samples import random_events, scenario
from gateway.engine import (
    NOTICE_INSTRUCTION,
    NOTICE_LEGAL_BASIS,
    NOTICE_PURPOSE,
    REMOVE,
    SEND,
    TRANSFORM,
    Engine,
    Plan,
    _Acc,
    _apply,
)
from gateway.events import parse_event
from gateway.runtime import Core
from gateway.transforms import Ctx

# --- compiled plans do exactly what the interpreter does ---------------------------------


def _both(plan: Plan, body: dict[str, Any], ctx: Ctx) -> tuple[Any, _Acc, Any, _Acc]:
    """(interpreted payload, its accumulator, compiled payload, its accumulator); a payload
    is the exception type when applying raised."""
    want_acc, got_acc = _Acc(), _Acc()
    want: Any
    got: Any
    try:
        want = _apply(plan.steps, body, want_acc, ctx)
    except Exception as e:
        want = type(e)
    assert plan.apply is not None
    try:
        got = plan.apply(
            body,
            ctx,
            got_acc.sent,
            got_acc.transformed,
            got_acc.removed,
            got_acc.c_sent,
            got_acc.c_trans,
            got_acc.c_removed,
        )
    except Exception as e:
        got = type(e)
    return want, want_acc, got, got_acc


def _assert_same(plan: Plan, body: dict[str, Any], ctx: Ctx) -> None:
    want, want_acc, got, got_acc = _both(plan, body, ctx)
    if isinstance(want, type):
        assert got is want
        return
    assert orjson.dumps(got) == orjson.dumps(want)  # same keys, same order
    for slot in ("sent", "transformed", "removed"):  # same paths, same order
        assert list(getattr(got_acc, slot)) == list(getattr(want_acc, slot))
    for slot in ("c_sent", "c_trans", "c_removed"):
        assert getattr(got_acc, slot) == getattr(want_acc, slot)


def _plans(engine: Engine, agent: str, event_type: str) -> list[Plan]:
    """The plans of every consent an agent's subject can have for the event type."""
    return [
        engine.full_plan(agent, event_type, sensitive_opt_in=opt_in, marketing_allowed=marketing)
        for opt_in in (False, True)
        for marketing in (False, True)
    ]


def test_compiled_plans_do_what_interpreted_plans_do(core: Core) -> None:
    engine = core.engine
    events = [
        *scenario(),
        *random_events(1500, seed=3, customers=40),
        *random_events(1500, seed=11, customers=2000),
    ]
    compared = 0
    for raw in events:
        event = parse_event(orjson.dumps(raw))
        for agent in engine.subscribers.get(event.event_type, ()):
            ctx = Ctx(engine.pseudonym_keys[agent], event.reference_date)
            for plan in _plans(engine, agent, event.event_type):
                _assert_same(plan, event.body, ctx)
                compared += 1
    assert compared > 10_000


# Odd values in place of an event's leaves: what makes a transform fail (and the field be
# removed, fail closed) in both implementations alike.
_ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False),
    st.text(max_size=4),
    st.sampled_from(["", "1", "not-a-date", "2026-13-40", "999.1.1.1", "::1", "12345"]),
)


def _mutate(obj: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
    if isinstance(obj, dict):
        return {k: _mutate(v, draw) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_mutate(x, draw) for x in obj]
    return draw(_ODD) if draw(st.booleans()) else obj


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_plans_fail_closed_as_the_interpreter_does(
    core: Core, data: st.DataObject
) -> None:
    engine = core.engine
    raw = data.draw(st.sampled_from(scenario()))
    event = parse_event(orjson.dumps(raw))
    body = _mutate(copy.deepcopy(event.body), data.draw)
    for agent in engine.subscribers.get(event.event_type, ()):
        ctx = Ctx(engine.pseudonym_keys[agent], event.reference_date)
        for plan in _plans(engine, agent, event.event_type):
            _assert_same(plan, body, ctx)


# --- erasure notices -----------------------------------------------------------------------


def _leaves(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def test_an_erasure_notice_carries_exactly_the_fields_its_steps_explain(core: Core) -> None:
    engine = core.engine
    kinds = set()
    for agent in core.policy.agents:
        d = engine.erasure_notice(
            agent, "evt-erasure-0001", "2026-05-04T10:00:00Z", "C-7", date(2026, 5, 4)
        )
        assert (d.agent, d.outcome, d.reason) == (agent, "erasure_notice", None)
        assert (d.purposes, d.legal_bases, d.consent) == (
            [NOTICE_PURPOSE],
            [NOTICE_LEGAL_BASIS],
            ["erasure_requested"],
        )
        assert d.payload is not None
        carried = _leaves(d.payload)
        steps = engine.notice_steps(agent)
        assert list(carried) == [s.path for s in steps if s.kind != REMOVE]
        assert carried["notice"] == "erasure"
        assert carried["event_id"] == "evt-erasure-0001"
        assert carried["requested_at"] == "2026-05-04T10:00:00Z"
        assert carried["instruction"] == NOTICE_INSTRUCTION
        (subject,) = [s for s in steps if s.path == "subject.customer_id"]
        kinds.add(subject.kind)
        if subject.kind == SEND:
            assert carried["subject.customer_id"] == "C-7"
        elif subject.kind == TRANSFORM:
            assert carried["subject.customer_id"] not in (None, "C-7")
        else:
            assert d.payload["subject"] == {}
        assert all(s.reason for s in steps)
    assert {TRANSFORM, REMOVE} <= kinds  # the default policy has both kinds of agent


# --- subject types -------------------------------------------------------------------------


def test_agents_limited_to_some_subject_types_withhold_while_the_type_is_unverified(
    core: Core,
) -> None:
    engine = core.engine
    raw = next(
        e
        for e in scenario()
        if e["event_type"] == "customer.registered" and e["subject"]["type"] == "business"
    )
    event = parse_event(orjson.dumps(raw))
    state = ConsentState(
        marketing="opt_in", marketing_stamp=Stamp("2026-03-02T09:00:00.000000Z", "evt-optin-1")
    )

    def decide(agent: str, verified: bool) -> Any:
        return engine.decide(
            agent,
            event.event_type,
            event.body,
            "business",
            state,
            event.reference_date,
            subject_type_verified=verified,
        )

    assert (decide("reseller", True).outcome, decide("reseller", True).reason) == (
        "disclosed",
        None,
    )
    unverified = decide("reseller", False)
    assert (unverified.outcome, unverified.reason) == ("withheld", "subject_type_unverified")
    assert unverified.payload is None
    # An agent open to every subject type does not depend on the type.
    assert decide("email", False).outcome == "disclosed"
