"""Tooling over the policy: ``check`` (lint against schemas and taxonomy), ``explain`` (what
an agent gets of one event type, field by field, and why) and ``diff`` (what would newly
flow to whom if another policy file were deployed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.engine import REMOVE, SEND, TRANSFORM, Engine, Step
from gateway.errors import KeyFileError
from gateway.keys import resolve_agent_public_key
from gateway.policy import Policy
from gateway.taxonomy import Taxonomy, covers, default_taxonomy
from schemas.registry import field_categories


def offline_engine(policy: Policy, taxonomy: Taxonomy | None = None) -> Engine:
    """An engine for analysis only: pseudonym keys are dummies, nothing is sealed."""
    return Engine(policy, {a: b"\x00" * 32 for a in policy.agents}, taxonomy)


# --- check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    agent: str
    message: str


def check_policy(policy: Policy, taxonomy: Taxonomy | None = None,
                 keys_dir: Path | None = None) -> list[Finding]:
    tax = taxonomy or default_taxonomy()
    out: list[Finding] = []
    for name, agent in policy.agents.items():
        def err(msg: str, name: str = name) -> None:
            out.append(Finding("error", name, msg))

        def warn(msg: str, name: str = name) -> None:
            out.append(Finding("warning", name, msg))

        carried = {c for ev in agent.subscribes for c in field_categories(ev).values()}
        for ev in agent.subscribes:
            if not agent.purposes_for(ev):
                err(f"subscribes to {ev} but no purpose covers it: it could never receive it")
        for use, purpose in agent.purposes.items():
            marketing = tax.is_marketing(use)
            for cat, rule in purpose.categories.items():
                leaves = {c for c in carried if covers(cat, c)}
                if not leaves:
                    warn(f"{use}: {cat} is permitted but no subscribed event carries it")
                if rule.action == "drop":
                    continue
                raw_direct = sorted(c for c in leaves if tax.is_direct_identifier(c))
                if covers("analytics", use) and rule.action == "send" and raw_direct:
                    err(f"{use}: analytics would receive direct identifiers raw "
                        f"({', '.join(raw_direct)} via {cat}); pseudonymise, generalise or "
                        f"drop them")
                if marketing and any(tax.is_sensitive(c) for c in leaves | {cat}):
                    err(f"{use}: sensitive data ({cat}) may never be used for marketing")
                if (agent.recipient.role != "service_provider"
                        and any(tax.is_sensitive(c) for c in leaves | {cat})):
                    warn(f"{use}: sensitive data ({cat}) to a {agent.recipient.role}; it will "
                         f"flow only with the subject's explicit opt-in")
            if marketing and purpose.legal_basis != "consent":
                warn(f"{use}: a marketing purpose with legal basis "
                     f"{purpose.legal_basis!r}; the policy relies on consent")
            if tax.is_own_marketing(use):
                if set(agent.conditions.subject_types) != {"business"}:
                    err(f"{use}: third parties' own marketing may reach business customers "
                        f"only (conditions.subject_types: [business]); consumers never")
                if not agent.conditions.requires_marketing_opt_in:
                    err(f"{use}: needs conditions.requires_marketing_opt_in: true (business "
                        f"customers who agreed to marketing only)")
        if keys_dir is not None:
            try:
                resolve_agent_public_key(agent.public_key, keys_dir)
            except KeyFileError as e:
                warn(f"public key not usable here: {e}")
    return out


# --- explain -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldExplanation:
    path: str
    category: str
    outcome: Literal["sent", "transformed", "removed"]
    treatment: str
    purpose: str
    why: str


_OUTCOME = {SEND: "sent", TRANSFORM: "transformed", REMOVE: "removed"}


def _expand(step: Step) -> list[Step]:
    if not step.children:
        return [step]
    out = []
    for c in step.children:
        for leaf in _expand(c):
            if step.kind in (SEND, REMOVE):  # a collapsed subtree: its verdict is the parent's
                same = leaf.kind == step.kind
                leaf = Step(leaf.name, leaf.path, step.kind, leaf.categories, leaf.many,
                            purpose=leaf.purpose if same else None,
                            rule=leaf.rule if same else step.rule,
                            reason=leaf.reason if same else f"{step.path}: {step.reason}")
            out.append(leaf)
    return out


def explain(engine: Engine, agent: str, event_type: str, *, sensitive_opt_in: bool = False,
            marketing_allowed: bool = True) -> list[FieldExplanation]:
    plan = engine.full_plan(agent, event_type, sensitive_opt_in=sensitive_opt_in,
                            marketing_allowed=marketing_allowed)
    rows = []
    for top in plan.steps:
        for s in _expand(top):
            (cat,) = s.categories
            rows.append(FieldExplanation(
                s.path, cat, _OUTCOME[s.kind],  # type: ignore[arg-type]
                s.rule if s.kind != REMOVE else (s.rule or "removed"),
                s.purpose or "", s.reason))
    return rows


def conditions_summary(policy: Policy, agent: str, event_type: str,
                       taxonomy: Taxonomy | None = None) -> list[str]:
    tax = taxonomy or default_taxonomy()
    a = policy.agents[agent]
    lines = []
    if event_type not in a.subscribes:
        lines.append(f"{agent} does not subscribe to {event_type}: always withheld")
    lines.append("subject types: " + ", ".join(a.conditions.subject_types))
    if a.conditions.requires_marketing_opt_in:
        lines.append("only subjects who opted in to marketing (and not revoked by GPC)")
    for use, p in a.purposes_for(event_type).items():
        extra = " — stops on opt-out, objection or GPC" if tax.is_marketing(use) else ""
        lines.append(f"purpose {use} (legal basis {p.legal_basis}){extra}")
    lines.append("sensitive categories need the subject's explicit opt-in for the agent "
                 "or the purpose")
    return lines


# --- diff --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: Literal["new_flow", "more_revealing", "less_revealing", "transform_changed",
                  "stopped", "agent_added", "agent_removed", "conditions"]
    agent: str
    event_type: str
    path: str
    before: str
    after: str


_RANK = {"removed": 0, "transformed": 1, "sent": 2}


def diff_policies(old: Policy, new: Policy, taxonomy: Taxonomy | None = None) -> list[Change]:
    eo, en = offline_engine(old, taxonomy), offline_engine(new, taxonomy)
    changes: list[Change] = []
    for name in sorted(set(old.agents) | set(new.agents)):
        if name not in old.agents:
            changes.append(Change("agent_added", name, "", "", "", new.agents[name].topic))
        if name not in new.agents:
            changes.append(Change("agent_removed", name, "", "", old.agents[name].topic, ""))
            continue
        if name in old.agents and old.agents[name].conditions != new.agents[name].conditions:
            changes.append(Change("conditions", name, "", "",
                                  str(old.agents[name].conditions.model_dump()),
                                  str(new.agents[name].conditions.model_dump())))
        old_events = set(old.agents[name].subscribes) if name in old.agents else set()
        for ev in new.agents[name].subscribes:
            # With opt-in: the most that could flow under each policy.
            after = {r.path: r for r in explain(en, name, ev, sensitive_opt_in=True)}
            before = ({r.path: r for r in explain(eo, name, ev, sensitive_opt_in=True)}
                      if ev in old_events else {})
            for path, a in after.items():
                b = before.get(path)
                b_out = b.outcome if b else "removed"
                if a.outcome == b_out and (b is None or a.treatment == b.treatment):
                    continue
                if b_out == "removed":
                    kind = "new_flow"
                elif a.outcome == "removed":
                    kind = "stopped"
                elif _RANK[a.outcome] != _RANK[b_out]:
                    kind = "more_revealing" if _RANK[a.outcome] > _RANK[b_out] \
                        else "less_revealing"
                else:
                    kind = "transform_changed"
                changes.append(Change(kind, name, ev, path,  # type: ignore[arg-type]
                                      b.treatment if b else "removed", a.treatment))
        for ev in old_events - set(new.agents[name].subscribes):
            changes.append(Change("stopped", name, ev, "*", "subscribed", "unsubscribed"))
    return changes
