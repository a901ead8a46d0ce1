"""Which consent states a customer could have had: the checks on a record's
``consent_state``.

Every decision record carries the subject's state its decision consulted, each value with
the stamp ``(occurred_at, event_id)`` of the event that set it. The gateway decides a
customer's events in the order they reach the customer's subject partition, which the
auditor cannot see; so it does not guess one order. It accepts a record's state exactly
when *some* arrival order the routing allows gives it, which comes down to four rules:

1. **Provenance.** Every value in the state comes from a real state-changing event of
   that customer on the input: the stamp names an admitted event of the customer
   (``occurred_at`` and event id) whose change sets that field to that value (the subject
   type with the rank of a registration or a type change, a sensitive grant, the
   erasure). A field never set holds its default. (Stamps of states written before
   stamps were kept, ``LEGACY``, cannot be traced and are accepted: counted.)
2. **Closure.** A state holds whole changes: if one field carries an event's stamp,
   every other field that event sets holds that event's value or a newer one (a change
   applies to every field it wins, :func:`gateway.consent.apply_change`). A grant the
   state does not show must have been revoked by a change at least as new.
3. **Routing order.** Events published on the same input partition reach the subject
   partition in their offset order (read there directly, or forwarded from there in order),
   so for an event published on one partition only: a state change published before it on
   that partition is held by its state, and one published only after it is not.
   Across partitions any interleaving is allowed.
4. **Only forward.** The records of one subject are logged in the order they were decided
   (one subject partition decides them; records are keyed by subject), so along the
   disclosure topic's partition each record's state holds every earlier record's state
   (no field older than before), and after the subject's erasure request every state is
   erased: nothing is disclosed for a subject decided after its erasure.

A record passes when its decision is also what the engine decides for its event under
its own state (:mod:`gateway.audit.comparison`); together: the decision is one the gateway
could have made in some order the routing allows, never merely one it did make.

Pure: no Kafka, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.expectation import Copy, History
from gateway.consent import (
    LEGACY,
    RANK_REGISTERED,
    STATE_EVENTS,
    Change,
    ConsentState,
    Grant,
    Stamp,
    _grant_order,
    _order,
    _type_order,
    _value_order,
)

REGISTERS = ("marketing", "objection", "gpc", "reseller_sharing")
_DEFAULTS: dict[str, Any] = {
    "marketing": "unknown",
    "objection": False,
    "gpc": False,
    "reseller_sharing": None,
}


@dataclass
class Rebuilt:
    """A record's state rebuilt as a :class:`ConsentState`, the changes it shows (by
    stamp), what does not trace back to the input, and whether a legacy stamp was met."""

    state: ConsentState
    shown: dict[Stamp, Change] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    legacy: bool = False


def _stamp(value: Any) -> Stamp | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError("a stamp is [occurred_at, event_id]")
    return Stamp(str(value[0]), str(value[1]))


def rebuild(consulted: Mapping[str, Any], hist: History) -> Rebuilt:
    """The state ``consulted`` (a record's ``consent_state``) describes, checked for
    provenance against ``hist`` (rule 1). Raises ValueError if it is not of that shape."""
    values: dict[str, Any] = {}
    out = Rebuilt(ConsentState())

    def source(
        what: str, stamp: Stamp, sets: Any, value: Any, kind: str = "register"
    ) -> Change | None:
        if stamp == LEGACY:
            out.legacy = True
            return None
        for change, _copy in hist.changes.get(stamp, ()):
            if sets(change, value):
                out.shown[stamp] = change
                return change
        out.problems.append(
            f"{what}={value!r} stamped {stamp.at} by event {stamp.event_id}: no event of "
            "this customer on the input sets it"
        )
        return None

    erased = consulted.get("erased") or {}
    if erased.get("value"):
        erased_at = _stamp(erased.get("at")) or LEGACY
        source("erased", erased_at, lambda c, v: c.erase, True)
        out.state = ConsentState(erased=True, erased_stamp=erased_at)
        return out

    for name in REGISTERS:
        reg = consulted.get(name) or {}
        value, stamp = reg.get("value", _DEFAULTS[name]), _stamp(reg.get("at"))
        if stamp is None:
            if value != _DEFAULTS[name]:
                out.problems.append(f"{name}={value!r} without the stamp of an event")
            continue
        values[name], values[name + "_stamp"] = value, stamp
        source(name, stamp, lambda c, v, n=name: (n, v) in c.registers, value)

    st = consulted.get("subject_type") or {}
    if st.get("verified"):
        stamp = _stamp(st.get("at")) or LEGACY
        change = source(
            "subject_type",
            stamp,
            lambda c, v: c.subject_type is not None and c.subject_type[0] == v,
            st.get("value"),
        )
        values.update(
            subject_type=st.get("value"),
            subject_type_stamp=stamp,
            subject_type_rank=(
                change.subject_type[1]
                if change is not None and change.subject_type
                else RANK_REGISTERED
            ),
        )

    grants = []
    for g in consulted.get("sensitive") or ():
        stamp = _stamp(g.get("at")) or LEGACY
        key = str(g.get("grant"))
        source(f"sensitive {key}", stamp, lambda c, v: (v, True) in c.grants, key)
        grants.append(Grant(key, True, stamp))
    if grants:
        values["grants"] = tuple(sorted(grants))
    out.state = ConsentState(**values)
    return out


def behind(a: ConsentState, b: ConsentState, hist: History) -> list[str]:
    """The fields in which state ``a`` is older than ``b``: empty when ``a`` holds
    everything ``b`` holds (it may come after ``b``). ``a`` is a state as records show it
    (granted grants only): a grant of ``b`` that ``a`` does not show must have been revoked
    on the input by a change at least as new."""
    if a.erased:
        return []
    if b.erased:
        return ["erased"]
    out = []
    for name in REGISTERS:
        sb = getattr(b, name + "_stamp")
        if sb is None:
            continue
        old = (_order(getattr(a, name + "_stamp")), _value_order(name, getattr(a, name)))
        if old < (_order(sb), _value_order(name, getattr(b, name))):
            out.append(name)
    if b.subject_type_stamp is not None and _type_order(a) < _type_order(b):
        out.append("subject_type")
    shown = {g.key: g for g in a.grants}
    for g in b.grants:
        cur = shown.get(g.key)
        if cur is not None:
            if _grant_order(cur) < _grant_order(g):
                out.append(f"sensitive {g.key}")
        elif g.granted and not any(s >= g.stamp for s in hist.revocations.get(g.key, ())):
            out.append(f"sensitive {g.key}")
    return out


def _may_be_rejected(copy: Copy, hist: History, reused: set[str]) -> bool:
    """Whether the customer's input lets ``copy``'s event be dead-lettered whatever the
    order (then a later state need not hold its change): under a reused id, or an event
    decided for agents whose declared type another event of the customer contradicts."""
    ev = copy.event
    if ev.event_id in reused:
        return True
    return ev.event_type not in STATE_EVENTS and any(
        c.subject_type is not None and c.subject_type[0] != ev.subject_type
        for pairs in hist.changes.values()
        for c, _ in pairs
    )


def check_state(
    consulted: Mapping[str, Any], event_copy: Copy, hist: History, *, reused: set[str]
) -> tuple[Rebuilt, list[str]]:
    """Rules 1 to 3 for the state a record of ``event_copy``'s event consulted: the rebuilt
    state and what makes it impossible (empty: some order the routing allows gives it).
    ``reused``: event ids used by more than one content (a change under such an id may
    have been rejected, so it is not required to be held)."""
    rebuilt = rebuild(consulted, hist)
    problems = list(rebuilt.problems)
    state = rebuilt.state
    event = event_copy.event
    # Rule 2: each change the state shows is held whole.
    for stamp, change in rebuilt.shown.items():
        lag = behind(state, change.as_state(), hist)
        if lag:
            problems.append(
                f"holds part of event {stamp.event_id}'s change but not its {', '.join(lag)}"
            )
    # The declared type of an event decided for agents must match a known type.
    if (
        event.event_type not in STATE_EVENTS
        and state.subject_type is not None
        and state.subject_type != event.subject_type
    ):
        problems.append(
            f"decided as a {state.subject_type} event although it declares "
            f"{event.subject_type} (it is dead-lettered subject_type_mismatch)"
        )
    # Rule 3: order on the one input partition the event was published on.
    parts = event_copy.partitions
    if len(parts) == 1:
        (q,) = parts
        first = event_copy.first_offset(q)
        last = max(e.message.offset for e in event_copy.inputs)
        assert first is not None
        for stamp, pairs in hist.changes.items():
            for change, other in pairs:
                if other is event_copy:
                    continue
                theirs = other.first_offset(q)
                if theirs is None:
                    continue
                if (
                    theirs < first
                    and not _may_be_rejected(other, hist, reused)
                    and behind(state, change.as_state(), hist)
                ):
                    problems.append(
                        f"misses event {stamp.event_id}, published before it on partition {q}"
                    )
                if (
                    other.partitions == {q}
                    and theirs > last
                    and stamp in rebuilt.shown
                    and rebuilt.shown[stamp] is change
                ):
                    problems.append(
                        f"holds event {stamp.event_id}, published only after it on partition {q}"
                    )
    return rebuilt, problems
