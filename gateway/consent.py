"""Per-subject consent state and how events change it.

The state is small and serialisable (it lives in a changelog-backed table in the stream
worker and in a dict in the offline replay). It also remembers which agents ever received
data about the subject, so that an erasure request can notify exactly those agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from gateway.taxonomy import covers

Marketing = Literal["unknown", "opt_in", "opt_out"]


@dataclass(frozen=True, slots=True)
class ConsentState:
    subject_type: str | None = None
    marketing: Marketing = "unknown"
    marketing_at: str | None = None
    objection: bool = False
    gpc: bool = False
    reseller_sharing: bool | None = None
    sensitive: frozenset[str] = frozenset()  # "agent:NAME" or "purpose:DATA_USE"
    erased: bool = False
    recipients: frozenset[str] = field(default_factory=frozenset)

    # --- questions the engine asks ---------------------------------------------------

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
        return (self.marketing == "opt_in" and self.marketing_allowed
                and self.reseller_sharing is not False)

    def sensitive_allowed(self, agent: str, use: str) -> str | None:
        """The recorded opt-in that covers ``agent`` or data use ``use``, if any."""
        if f"agent:{agent}" in self.sensitive:
            return f"agent:{agent}"
        for grant in self.sensitive:
            if grant.startswith("purpose:") and covers(grant[8:], use):
                return grant
        return None

    # --- (de)serialisation for tables ------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_type": self.subject_type,
            "marketing": self.marketing,
            "marketing_at": self.marketing_at,
            "objection": self.objection,
            "gpc": self.gpc,
            "reseller_sharing": self.reseller_sharing,
            "sensitive": sorted(self.sensitive),
            "erased": self.erased,
            "recipients": sorted(self.recipients),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ConsentState:
        if not d:
            return cls()
        return cls(
            subject_type=d.get("subject_type"),
            marketing=d.get("marketing", "unknown"),
            marketing_at=d.get("marketing_at"),
            objection=bool(d.get("objection")),
            gpc=bool(d.get("gpc")),
            reseller_sharing=d.get("reseller_sharing"),
            sensitive=frozenset(d.get("sensitive") or ()),
            erased=bool(d.get("erased")),
            recipients=frozenset(d.get("recipients") or ()),
        )

    def with_recipients(self, agents: set[str]) -> ConsentState:
        if agents <= self.recipients:
            return self
        return replace(self, recipients=self.recipients | agents)


def apply_event(state: ConsentState, event_type: str, subject_type: str,
                occurred_at: str, data: dict[str, Any]) -> ConsentState:
    """The state after an event (before its disclosures are decided)."""
    if state.erased:
        return state
    if state.subject_type != subject_type:
        state = replace(state, subject_type=subject_type)
    if event_type == "consent.changed":
        changes: dict[str, Any] = {}
        if data.get("marketing") is not None:
            changes["marketing"] = data["marketing"]
            changes["marketing_at"] = occurred_at
        for name in ("objection", "gpc", "reseller_sharing"):
            if data.get(name) is not None:
                changes[name] = data[name]
        grants = set(state.sensitive)
        for g in data.get("sensitive") or ():
            key = f"{g['scope']}:{g['target']}"
            if g["granted"]:
                grants.add(key)
            else:
                grants.discard(key)
        changes["sensitive"] = frozenset(grants)
        return replace(state, **changes)
    if event_type == "site.visit" and data.get("gpc") and not state.gpc:
        # A browser's Global Privacy Control signal is an opt-out of sale/sharing.
        return replace(state, gpc=True)
    if event_type == "erasure.requested":
        # Forget everything but the fact of erasure and who must be told.
        return ConsentState(subject_type=subject_type, erased=True,
                            recipients=state.recipients)
    return state
