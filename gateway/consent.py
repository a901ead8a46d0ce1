"""Per-subject state: consent, objection, GPC, sensitive-data grants, erasure and the
subject's type, and how events change it.

Every field is a last-writer-wins register stamped by the event that set it: a stamp is
``(occurred_at in UTC, event_id)``, compared as a tuple. An event changes a field only if its
stamp is greater than the field's, so the order in which events arrive does not matter: any
arrival order of a subject's state changes ends in the state their time order gives. A
change none of whose fields it could set (each holds a later stamp) is *superseded*; a
change that sets some fields and not others takes effect for the fields it sets. Two
contents under one stamp (an event id reused at the same time) resolve to the more
protective value.

* Sensitive-data grants keep a stamp per grant, revocations included (tombstones), so an
  older grant arriving late cannot resurrect a revoked one.
* Erasure is final: it clears everything else, and nothing changes an erased subject's
  state again (its stamp only moves to an earlier erasure request).
* The subject's type is set by ``customer.registered`` while unknown and changed only by
  ``customer.type_changed``; a type set by a type change outranks one set at registration
  whatever their times.

:meth:`ConsentState.join` merges two states field by field (commutative, associative,
idempotent), so restoring from a changelog that holds an older entry cannot roll a subject's
state back. The state is small and serialisable (:meth:`ConsentState.to_dict`, a versioned
JSON-ready dict).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple

from gateway.taxonomy import covers

Marketing = Literal["unknown", "opt_in", "opt_out"]
Status = Literal["applied", "already", "superseded", "erased", "noop"]

STATE_VERSION: Final = 2
# Events whose only effect is on the state (they are never disclosed as such).
STATE_EVENTS: Final = frozenset({"consent.changed", "erasure.requested", "customer.type_changed"})
REGISTERED: Final = "customer.registered"
TYPE_CHANGED: Final = "customer.type_changed"
ERASURE: Final = "erasure.requested"
# Which event set the subject type: a type change outranks a registration.
RANK_REGISTERED: Final = 0
RANK_TYPE_CHANGED: Final = 1

_CHANGING: Final = STATE_EVENTS | {REGISTERED}
_REGISTERS: Final = ("marketing", "objection", "gpc", "reseller_sharing")
_DEFAULTS: Final[dict[str, Any]] = {
    "marketing": "unknown",
    "objection": False,
    "gpc": False,
    "reseller_sharing": None,
}


class Stamp(NamedTuple):
    """What set a field: the event's time (UTC, fixed width, so text order is time order)
    and its id (breaks ties between events of the same time)."""

    at: str
    event_id: str

    def to_json(self) -> list[str]:
        return [self.at, self.event_id]


# Older than any event: what a field set before stamps were kept (a version-1 state) carries.
LEGACY: Final = Stamp("", "")


def stamp_time(occurred_at: datetime) -> str:
    """An event time as stamps hold it: UTC, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    if occurred_at.tzinfo is not None:
        occurred_at = occurred_at.astimezone(UTC).replace(tzinfo=None)
    return occurred_at.isoformat(timespec="microseconds") + "Z"


def stamp_of(occurred_at: datetime, event_id: str) -> Stamp:
    return Stamp(stamp_time(occurred_at), event_id)


class Grant(NamedTuple):
    """A sensitive-data grant (``agent:NAME`` or ``purpose:DATA_USE``), given or revoked."""

    key: str
    granted: bool
    stamp: Stamp


def _order(stamp: Stamp | None) -> tuple[bool, Stamp]:
    # None (never set) sorts below every stamp, the legacy stamp included.
    return (stamp is not None, stamp or LEGACY)


# Ties between equal stamps (one event id reused at one time, two contents) are broken
# towards the more protective value: an opt-out over an opt-in, an objection or GPC over
# none, refused reseller sharing over agreed, a consumer over a business (resellers get
# business customers' data only), a revoked grant over a given one. Any order would keep
# merging commutative; this one fails closed.
_PROTECTIVE: Final[dict[str, dict[Any, int]]] = {
    "marketing": {"unknown": 0, "opt_in": 1, "opt_out": 2},
    "objection": {False: 0, True: 1},
    "gpc": {False: 0, True: 1},
    "reseller_sharing": {None: 0, True: 1, False: 2},
    "subject_type": {None: 0, "business": 1, "consumer": 2},
}


def _value_order(name: str, value: Any) -> tuple[int, str]:
    table = _PROTECTIVE[name]
    rank = table.get(value)
    # A value outside the table (none is written) sorts above it, deterministically.
    return (rank, "") if rank is not None else (len(table), repr(value))


@dataclass(frozen=True, slots=True)
class ConsentState:
    subject_type: str | None = None
    subject_type_stamp: Stamp | None = None
    subject_type_rank: int = RANK_REGISTERED
    marketing: Marketing = "unknown"
    marketing_stamp: Stamp | None = None
    objection: bool = False
    objection_stamp: Stamp | None = None
    gpc: bool = False
    gpc_stamp: Stamp | None = None
    reseller_sharing: bool | None = None
    reseller_sharing_stamp: Stamp | None = None
    # One entry per grant key, sorted by key: the latest given or revoked.
    grants: tuple[Grant, ...] = ()
    # The grant keys in force: derived from ``grants`` (given alone, stamps are legacy).
    sensitive: frozenset[str] = frozenset()
    erased: bool = False
    erased_stamp: Stamp | None = None

    def __post_init__(self) -> None:
        if self.grants:
            object.__setattr__(
                self, "sensitive", frozenset(g.key for g in self.grants if g.granted)
            )
        elif self.sensitive:
            object.__setattr__(
                self, "grants", tuple(Grant(k, True, LEGACY) for k in sorted(self.sensitive))
            )
        if self.erased and self.erased_stamp is None:
            object.__setattr__(self, "erased_stamp", LEGACY)

    # --- questions the engine asks ---------------------------------------------------

    @property
    def marketing_at(self) -> str | None:
        """When the marketing choice in force was made (its stamp's time), as records write
        times: whole seconds unless the event time had a fraction."""
        if self.marketing_stamp is None:
            return None
        at = self.marketing_stamp.at
        return at[:-8] + "Z" if at.endswith(".000000Z") else at

    @property
    def marketing_allowed(self) -> bool:
        """Marketing purposes flow unless the subject opted out, objected or sent GPC."""
        return self.marketing != "opt_out" and not self.objection and not self.gpc

    @property
    def marketing_blocker(self) -> str:
        if self.gpc:
            return "global_privacy_control"
        if self.objection:
            return "objection"
        return "marketing_opt_out"

    @property
    def marketing_opted_in(self) -> bool:
        """Explicit agreement to marketing, as resellers need (and not revoked by GPC)."""
        return (
            self.marketing == "opt_in"
            and self.marketing_allowed
            and self.reseller_sharing is not False
        )

    def sensitive_allowed(self, agent: str, use: str) -> str | None:
        """The recorded opt-in that covers ``agent`` or data use ``use``, if any."""
        if f"agent:{agent}" in self.sensitive:
            return f"agent:{agent}"
        for grant in self.sensitive:
            if grant.startswith("purpose:") and covers(grant[8:], use):
                return grant
        return None

    # --- merging ---------------------------------------------------------------------

    def join(self, other: ConsentState) -> ConsentState:
        """The least state that holds both: each field from the later stamp. Erasure wins
        over everything (with the earliest erasure's stamp)."""
        if self.erased or other.erased:
            stamps = [s.erased_stamp for s in (self, other) if s.erased and s.erased_stamp]
            return ConsentState(erased=True, erased_stamp=min(stamps))
        changes: dict[str, Any] = {}
        for name in _REGISTERS:
            mine = (
                _order(getattr(self, name + "_stamp")),
                _value_order(name, getattr(self, name)),
            )
            theirs = (
                _order(getattr(other, name + "_stamp")),
                _value_order(name, getattr(other, name)),
            )
            if theirs > mine:
                changes[name] = getattr(other, name)
                changes[name + "_stamp"] = getattr(other, name + "_stamp")
        if _type_order(other) > _type_order(self):
            changes["subject_type"] = other.subject_type
            changes["subject_type_stamp"] = other.subject_type_stamp
            changes["subject_type_rank"] = other.subject_type_rank
        if other.grants:
            grants = _join_grants(self.grants, other.grants)
            if grants != self.grants:
                changes["grants"] = grants
        return replace(self, **changes) if changes else self

    # --- what a record says was consulted ----------------------------------------------

    def consulted(self, declared_type: str) -> dict[str, Any]:
        """The state a decision was made against, each value with the stamp that set it:
        what a decision record carries so that an audit can re-decide it."""
        known = self.subject_type is not None
        m, o, g, r = (
            self.marketing_stamp,
            self.objection_stamp,
            self.gpc_stamp,
            self.reseller_sharing_stamp,
        )
        return {
            "subject_type": {
                "value": self.subject_type if known else declared_type,
                "verified": known,
                "at": list(self.subject_type_stamp) if self.subject_type_stamp else None,
            },
            "marketing": {"value": self.marketing, "at": list(m) if m else None},
            "objection": {"value": self.objection, "at": list(o) if o else None},
            "gpc": {"value": self.gpc, "at": list(g) if g else None},
            "reseller_sharing": {"value": self.reseller_sharing, "at": list(r) if r else None},
            "sensitive": [{"grant": x.key, "at": list(x.stamp)} for x in self.grants if x.granted],
            "erased": {
                "value": self.erased,
                "at": list(self.erased_stamp) if self.erased_stamp else None,
            },
        }

    # --- (de)serialisation for tables ------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, the same for equal states (versioned: ``v``)."""

        def reg(name: str) -> dict[str, Any] | None:
            stamp = getattr(self, name + "_stamp")
            if stamp is None:
                return None
            return {"value": getattr(self, name), "at": stamp.to_json()}

        return {
            "v": STATE_VERSION,
            "subject_type": (
                None
                if self.subject_type_stamp is None
                else {
                    "value": self.subject_type,
                    "rank": self.subject_type_rank,
                    "at": self.subject_type_stamp.to_json(),
                }
            ),
            **{name: reg(name) for name in _REGISTERS},
            "grants": [
                {"grant": g.key, "granted": g.granted, "at": g.stamp.to_json()} for g in self.grants
            ],
            "erased": None
            if not self.erased or not self.erased_stamp
            else {"at": self.erased_stamp.to_json()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> ConsentState:
        """A state from :meth:`to_dict`, or from the unversioned form written before
        stamps were kept (its fields then count as older than any event)."""
        if not d:
            return cls()
        version = d.get("v", 1)
        if version == 1:
            return _from_v1(d)
        if version != STATE_VERSION:
            raise ValueError(
                f"consent state version {version!r} is not supported (this gateway reads "
                f"1 and {STATE_VERSION}); run the gateway version that wrote it"
            )

        def stamp(v: Any) -> Stamp:
            at, event_id = v
            return Stamp(str(at), str(event_id))

        values: dict[str, Any] = {}
        t = d.get("subject_type")
        if t:
            values.update(
                subject_type=t["value"],
                subject_type_rank=int(t["rank"]),
                subject_type_stamp=stamp(t["at"]),
            )
        for name in _REGISTERS:
            r = d.get(name)
            if r:
                values[name] = r["value"]
                values[name + "_stamp"] = stamp(r["at"])
        grants = tuple(
            Grant(str(g["grant"]), bool(g["granted"]), stamp(g["at"]))
            for g in d.get("grants") or ()
        )
        if grants:
            values["grants"] = tuple(sorted(grants))
        erased = d.get("erased")
        if erased:
            values.update(erased=True, erased_stamp=stamp(erased["at"]))
        return cls(**values)


def _from_v1(d: Mapping[str, Any]) -> ConsentState:
    if d.get("erased"):
        return ConsentState(erased=True, erased_stamp=LEGACY)
    values: dict[str, Any] = {}
    if d.get("subject_type"):
        values.update(subject_type=d["subject_type"], subject_type_stamp=LEGACY)
    for name in _REGISTERS:
        v = d.get(name)
        if v is not None and v != _DEFAULTS[name]:
            values[name] = v
            values[name + "_stamp"] = LEGACY
    if d.get("sensitive"):
        values["grants"] = tuple(Grant(str(k), True, LEGACY) for k in sorted(d["sensitive"]))
    return ConsentState(**values)


def _type_order(s: ConsentState) -> tuple[Any, ...]:
    # Set before unset, then a type change before a registration, then the later stamp.
    return (
        s.subject_type_stamp is not None,
        s.subject_type_rank,
        s.subject_type_stamp or LEGACY,
        _value_order("subject_type", s.subject_type),
    )


def _grant_order(g: Grant) -> tuple[Stamp, bool]:
    # At equal stamps a revocation wins (see _PROTECTIVE).
    return (g.stamp, not g.granted)


def _join_grants(a: tuple[Grant, ...], b: tuple[Grant, ...]) -> tuple[Grant, ...]:
    out = {g.key: g for g in a}
    for g in b:
        cur = out.get(g.key)
        if cur is None or _grant_order(g) > _grant_order(cur):
            out[g.key] = g
    return tuple(out[k] for k in sorted(out))


# --- events as state changes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """What one event would set in its subject's state, all under the event's stamp."""

    stamp: Stamp
    registers: tuple[tuple[str, Any], ...] = ()
    grants: tuple[tuple[str, bool], ...] = ()
    subject_type: tuple[str, int] | None = None  # (type, rank)
    erase: bool = False

    def as_state(self) -> ConsentState:
        """The least state holding exactly this change."""
        if self.erase:
            return ConsentState(erased=True, erased_stamp=self.stamp)
        values: dict[str, Any] = {}
        for name, value in self.registers:
            values[name] = value
            values[name + "_stamp"] = self.stamp
        if self.grants:
            values["grants"] = tuple(
                Grant(k, granted, self.stamp) for k, granted in sorted(dict(self.grants).items())
            )
        if self.subject_type is not None:
            values.update(
                subject_type=self.subject_type[0],
                subject_type_rank=self.subject_type[1],
                subject_type_stamp=self.stamp,
            )
        return ConsentState(**values)


def changes_state(event_type: str, data: Mapping[str, Any]) -> bool:
    """Whether an event of this type with this data may change its subject's state (what
    :func:`change_of` returns a change for)."""
    return event_type in _CHANGING or (event_type == "site.visit" and bool(data.get("gpc")))


def change_of(
    event_type: str, declared_type: str, stamp: Stamp, data: Mapping[str, Any]
) -> Change | None:
    """What an event would change in its subject's state, or None for an event that changes
    nothing."""
    if event_type == "consent.changed":
        registers = tuple((n, data[n]) for n in _REGISTERS if data.get(n) is not None)
        grants: dict[str, bool] = {}
        for g in data.get("sensitive") or ():
            grants[f"{g['scope']}:{g['target']}"] = bool(g["granted"])  # the last one counts
        return Change(stamp, registers, tuple(grants.items()))
    if event_type == "site.visit":
        # A browser's Global Privacy Control signal is an opt-out of sale/sharing.
        return Change(stamp, (("gpc", True),)) if data.get("gpc") else None
    if event_type == ERASURE:
        return Change(stamp, erase=True)
    if event_type == REGISTERED:
        return Change(stamp, subject_type=(declared_type, RANK_REGISTERED))
    if event_type == TYPE_CHANGED:
        return Change(stamp, subject_type=(str(data["type"]), RANK_TYPE_CHANGED))
    return None


@dataclass(frozen=True, slots=True)
class Applied:
    """A state after a change, and what became of the change: ``applied`` (some field
    took it), ``already`` (every field already holds this very change), ``superseded``
    (nothing taken: later stamps everywhere), ``erased`` (the subject is erased: nothing
    changes), ``noop`` (the change sets nothing)."""

    state: ConsentState
    status: Status


def apply_change(state: ConsentState, change: Change | None) -> Applied:
    if change is None:
        return Applied(state, "noop")
    if state.erased:
        if not change.erase:
            return Applied(state, "erased")
        assert state.erased_stamp is not None
        if change.stamp < state.erased_stamp:
            return Applied(ConsentState(erased=True, erased_stamp=change.stamp), "applied")
        return Applied(state, "already" if change.stamp == state.erased_stamp else "superseded")
    if change.erase:
        return Applied(ConsentState(erased=True, erased_stamp=change.stamp), "applied")
    delta = change.as_state()
    # Per field: does the change win, tie (this very change is there), or lose?
    outcomes: list[int] = []
    for name, value in change.registers:
        new = (_order(change.stamp), _value_order(name, value))
        old = (_order(getattr(state, name + "_stamp")), _value_order(name, getattr(state, name)))
        outcomes.append((new > old) - (new < old))
    current = {g.key: g for g in state.grants}
    for key, granted in change.grants:
        cur = current.get(key)
        if cur is None:
            outcomes.append(1)
        else:
            new_g, old_g = _grant_order(Grant(key, granted, change.stamp)), _grant_order(cur)
            outcomes.append((new_g > old_g) - (new_g < old_g))
    if change.subject_type is not None:
        new_t, old_t = _type_order(delta), _type_order(state)
        outcomes.append((new_t > old_t) - (new_t < old_t))
    if not outcomes:
        return Applied(state, "noop")
    if any(o > 0 for o in outcomes):
        return Applied(state.join(delta), "applied")
    if all(o == 0 for o in outcomes):
        return Applied(state, "already")
    return Applied(state, "superseded")


__all__ = [
    "ERASURE",
    "LEGACY",
    "REGISTERED",
    "STATE_EVENTS",
    "STATE_VERSION",
    "TYPE_CHANGED",
    "Applied",
    "Change",
    "ConsentState",
    "Grant",
    "Marketing",
    "Stamp",
    "Status",
    "apply_change",
    "change_of",
    "changes_state",
    "stamp_of",
    "stamp_time",
]
