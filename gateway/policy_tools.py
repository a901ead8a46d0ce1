"""Tooling over the policy: ``check`` (lint against schemas, taxonomy and the privacy
policy's promises), ``explain`` (what an agent gets of one event type, field by field, and
why -- health hints and retention included; for an erasure request, what its erasure notice
carries) and ``diff`` (what would newly flow to whom if another policy file were
deployed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.engine import (
    ERASURE_EVENT,
    HINT,
    NOTICE_LEGAL_BASIS,
    NOTICE_PURPOSE,
    REMOVE,
    SEND,
    TRANSFORM,
    Engine,
    Step,
)
from gateway.errors import KeyFileError
from gateway.keys import resolve_agent_public_key
from gateway.policy import AggregateSpec, Policy, TableSpec
from gateway.taxonomy import Taxonomy, covers, default_taxonomy
from schemas.registry import event_types, field_tree

# The privacy policy's own words, quoted where `check` refuses what they rule out.
NO_DIRECT_MARKETING = (
    "\"We have and follow a policy of not disclosing customers' personal information to "
    'third parties for direct marketing purposes"'
)
NOT_THEIR_OWN = '"They are not permitted to use your Personal Information for their own purposes"'


def carried_categories(event_type: str) -> set[str]:
    """Every category a field of the event type has, or may reveal (health hints)."""
    out: set[str] = set()
    for node in field_tree(event_type):
        for leaf in node.leaves():
            out.add(leaf.category)
            if leaf.reveals:
                out.add(leaf.reveals)
    return out


def offline_engine(policy: Policy, taxonomy: Taxonomy | None = None) -> Engine:
    """An engine for analysis only: pseudonym keys are dummies, nothing is sealed."""
    return Engine(policy, {a: b"\x00" * 32 for a in policy.agents}, taxonomy)


# --- check ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LintFinding:
    level: Literal["error", "warning"]
    agent: str
    message: str


def check_policy(
    policy: Policy, taxonomy: Taxonomy | None = None, keys_dir: Path | None = None
) -> list[LintFinding]:
    tax = taxonomy or default_taxonomy()
    out: list[LintFinding] = []
    for name, agent in policy.agents.items():

        def err(msg: str, name: str = name) -> None:
            out.append(LintFinding("error", name, msg))

        def warn(msg: str, name: str = name) -> None:
            out.append(LintFinding("warning", name, msg))

        carried = {c for ev in agent.subscribes for c in carried_categories(ev)}
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
                    err(
                        f"{use}: analytics would receive direct identifiers raw "
                        f"({', '.join(raw_direct)} via {cat}); pseudonymise, generalise or "
                        f"drop them"
                    )
                if marketing and any(tax.is_sensitive(c) for c in leaves | {cat}):
                    err(f"{use}: sensitive data ({cat}) may never be used for marketing")
                if agent.recipient.role != "service_provider" and any(
                    tax.is_sensitive(c) for c in leaves | {cat}
                ):
                    warn(
                        f"{use}: sensitive data ({cat}) to a {agent.recipient.role}; it will "
                        f"flow only with the subject's explicit opt-in"
                    )
            if marketing and purpose.legal_basis in ("contract", "legal_obligation"):
                err(
                    f"{use}: marketing never rests on {purpose.legal_basis}: use consent, or "
                    f"legitimate_interests (the soft opt-in) with with_consent: consent"
                )
            elif (
                marketing
                and purpose.legal_basis == "legitimate_interests"
                and purpose.with_consent is None
            ):
                warn(
                    f"{use}: on legitimate interests without with_consent: consent, the "
                    f"records of customers who opted in would not name their consent"
                )
            if tax.is_own_marketing(use):
                err(
                    f"{use}: the recipient would use the data for its own marketing; the "
                    f"privacy policy rules that out: {NO_DIRECT_MARKETING}"
                )
            elif marketing and agent.recipient.role == "third_party":
                err(
                    f"{use}: a third party (role third_party) would get data for marketing, "
                    f"i.e. for its own direct marketing: {NO_DIRECT_MARKETING}; a partner "
                    f"acting for us under contract is a service_provider ({NOT_THEIR_OWN})"
                )
            if tax.is_own_marketing(use) or tax.is_partner_marketing(use):
                if set(agent.conditions.subject_types) != {"business"}:
                    err(
                        f"{use}: resellers and sales partners may reach business customers "
                        f"only (conditions.subject_types: [business]); consumers never"
                    )
                if not agent.conditions.requires_marketing_opt_in:
                    err(
                        f"{use}: needs conditions.requires_marketing_opt_in: true (business "
                        f"customers who agreed to marketing only)"
                    )
        if keys_dir is not None:
            try:
                resolve_agent_public_key(agent.public_key, keys_dir)
            except KeyFileError as e:
                warn(f"public key not usable here: {e}")
    return out


# --- explain -----------------------------------------------------------------------------


FieldOutcome = Literal["sent", "transformed", "removed"]


@dataclass(frozen=True)
class FieldExplanation:
    """One field of an event as an agent gets it. For a free-text field that may reveal a
    vision condition, ``hint`` says what happens when its value does (``outcome`` and
    ``treatment`` are for a value that does not)."""

    path: str
    category: str
    outcome: FieldOutcome
    treatment: str
    purpose: str
    why: str
    hint: str = ""


_OUTCOME: dict[int, FieldOutcome] = {SEND: "sent", TRANSFORM: "transformed", REMOVE: "removed"}


def _expand(step: Step) -> list[Step]:
    if not step.children or step.kind == HINT:
        return [step]
    out = []
    for c in step.children:
        for leaf in _expand(c):
            if step.kind in (SEND, REMOVE):  # a collapsed subtree: its verdict is the parent's
                same = leaf.kind == step.kind
                leaf = Step(
                    leaf.name,
                    leaf.path,
                    step.kind,
                    leaf.categories,
                    leaf.many,
                    purpose=leaf.purpose if same else None,
                    rule=leaf.rule if same else step.rule,
                    reason=leaf.reason if same else f"{step.path}: {step.reason}",
                )
            out.append(leaf)
    return out


def _treatment(s: Step) -> str:
    return s.rule if s.kind != REMOVE else (s.rule or "removed")


def _row(s: Step) -> FieldExplanation:
    if s.kind != HINT:
        (cat,) = s.categories
        return FieldExplanation(
            s.path, cat, _OUTCOME[s.kind], _treatment(s), s.purpose or "", s.reason
        )
    plain, alt = s.children
    (cat,) = plain.categories
    (revealed,) = alt.categories
    hint = f"health hint: if {s.hint}, it is {revealed}: {_OUTCOME[alt.kind]} ({alt.reason})"
    return FieldExplanation(
        s.path,
        cat,
        _OUTCOME[plain.kind],
        _treatment(plain),
        plain.purpose or "",
        plain.reason,
        hint,
    )


def explain(
    engine: Engine,
    agent: str,
    event_type: str,
    *,
    sensitive_opt_in: bool = False,
    marketing_allowed: bool = True,
    objection: bool = False,
) -> list[FieldExplanation]:
    """Every field ``agent`` gets of ``event_type`` for a subject with the given consent:
    sent, transformed or removed, under which purpose and rule, and why; for a free-text
    field, also what happens when its value reveals a vision condition. For the erasure
    event, the fields of the erasure notice the agent gets instead (consent plays no part
    in a notice)."""
    if event_type == ERASURE_EVENT:
        if engine.policy.agents[agent].aggregate is not None:
            return []  # it holds nothing about any subject: no notice (conditions say so)
        steps = engine.notice_steps(agent)
    else:
        steps = engine.full_plan(
            agent,
            event_type,
            sensitive_opt_in=sensitive_opt_in,
            marketing_allowed=marketing_allowed,
            objection=objection,
        ).steps
    return [_row(s) for top in steps for s in _expand(top)]


def conditions_summary(
    policy: Policy, agent: str, event_type: str, taxonomy: Taxonomy | None = None
) -> list[str]:
    tax = taxonomy or default_taxonomy()
    a = policy.agents[agent]
    if event_type == ERASURE_EVENT and a.aggregate is not None:
        return [
            f"{agent} receives aggregates only: it holds nothing about the subject and gets "
            "no erasure notice; the erasure stops the subject's contributions to its windows",
        ]
    if event_type == ERASURE_EVENT:
        return [
            f"{agent} never gets the request itself: it gets an erasure notice if it ever "
            "received data about the subject (once: no notice for a subject already erased)",
            f"purpose {NOTICE_PURPOSE} (legal basis {NOTICE_LEGAL_BASIS}), whatever the "
            "subject's consent",
        ]
    lines = []
    if a.aggregate is not None:
        lines.append(
            f"{agent} receives aggregates only: nothing is sent per event; the fields above "
            "'sent' or 'transformed' are what the event may contribute to its tables "
            "(record outcome contributed); see `policy explain --agent " + agent + "`"
        )
        lines.append("a subject who sent Global Privacy Control (GPC) does not contribute")
    if event_type not in a.subscribes:
        lines.append(f"{agent} does not subscribe to {event_type}: always withheld")
    lines.append("subject types: " + ", ".join(a.conditions.subject_types))
    if set(a.conditions.subject_types) != {"consumer", "business"}:
        lines.append("withheld while the subject's type is not yet known to the gateway")
    if a.conditions.requires_marketing_opt_in:
        lines.append("only subjects who opted in to marketing (and not revoked by GPC)")
    for use, p in a.purposes_for(event_type).items():
        basis = f"legal basis {p.legal_basis}"
        if p.with_consent:
            basis += f"; {p.with_consent} once the subject opted in to marketing"
        stops = []
        if tax.is_marketing(use):
            stops.append("stops on opt-out, objection or GPC")
        elif p.legal_basis == "legitimate_interests":
            stops.append("stops on objection")
        if p.legal_basis == "consent":
            stops.append("needs the marketing opt-in")
        extra = f" — {'; '.join(stops)}" if stops else ""
        lines.append(f"purpose {use} ({basis}){extra}")
    lines.append(
        "sensitive categories need the subject's explicit opt-in for the agent or the purpose"
    )
    return lines


def aggregate_summary(policy: Policy, agent: str) -> list[str]:
    """What an aggregate-only agent receives: its tables (dimensions, measures, what a count
    counts), windows, grace, threshold and the suppression rules. Empty for other agents."""
    from gateway.aggregates import DIMENSIONS, MEASURES, table_unit

    spec = policy.agents[agent].aggregate
    if spec is None:
        return []
    lines = [
        f"{agent} receives aggregate tables only, never an event, a customer id, a "
        "pseudonym, a session id, an IP address or a time finer than the window",
        f"windows: tumbling {', '.join(spec.windows)} by the events' time; late events "
        f"within {spec.grace} of a window's end re-emit it (revision + 1), later ones are "
        "counted as late_events, not added",
        f"threshold: every published cell, marginal and total comes from at least "
        f"k={spec.k} distinct customers; complementary suppression hides any cell the "
        "published totals would reveal; a window with fewer than k customers is not sent",
        f"measures: {', '.join(f'{m} ({MEASURES[m][1]})' for m in spec.measures)}",
        f"dimensions: {', '.join(f'{d} ({DIMENSIONS[d][2]})' for d in spec.dimensions)}",
    ]
    for name, t in spec.tables.items():
        lines.append(
            f"table {name}: per {table_unit(t.dimensions, t.events)} of "
            f"{', '.join(t.events)}, by {' x '.join(t.dimensions)}: {', '.join(t.measures)}"
        )
    return lines


def retention_summary(policy: Policy, event_type: str) -> list[str]:
    """How long the gateway keeps records about the event type's categories (each under
    its most specific retention rule), and the consent state, as the policy file says."""
    if event_type not in event_types():
        return []
    by_rule: dict[str | None, list[str]] = {}
    for cat in sorted(carried_categories(event_type)):
        key, _ = policy.retention.rule_for(cat)
        by_rule.setdefault(key, []).append(cat)
    lines = []
    for key, cats in sorted(by_rule.items(), key=lambda kv: kv[0] or ""):
        _, rule = policy.retention.rule_for(cats[0])
        name = key or "default"
        lines.append(f"retention {rule.period} ({name}: {rule.basis}): {', '.join(cats)}")
    prefs = policy.retention.retention_for(["user.privacy_preferences"])
    lines.append(
        f"a record is kept for the longest period of its categories; the consent state "
        f"{prefs.days} days from the subject's last event"
    )
    return lines


# --- diff --------------------------------------------------------------------------------


ChangeKind = Literal[
    "new_flow",
    "more_revealing",
    "less_revealing",
    "transform_changed",
    "stopped",
    "agent_added",
    "agent_removed",
    "conditions",
]


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
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
            changes.append(
                Change(
                    "conditions",
                    name,
                    "",
                    "",
                    str(old.agents[name].conditions.model_dump()),
                    str(new.agents[name].conditions.model_dump()),
                )
            )
        old_events = set(old.agents[name].subscribes) if name in old.agents else set()
        for ev in new.agents[name].subscribes:
            # With opt-in: the most that could flow under each policy.
            after = {r.path: r for r in explain(en, name, ev, sensitive_opt_in=True)}
            before = (
                {r.path: r for r in explain(eo, name, ev, sensitive_opt_in=True)}
                if ev in old_events
                else {}
            )
            for path, a in after.items():
                b = before.get(path)
                b_out = b.outcome if b else "removed"
                if a.outcome == b_out and (b is None or a.treatment == b.treatment):
                    continue
                kind: ChangeKind
                if b_out == "removed":
                    kind = "new_flow"
                elif a.outcome == "removed":
                    kind = "stopped"
                elif _RANK[a.outcome] != _RANK[b_out]:
                    kind = "more_revealing" if _RANK[a.outcome] > _RANK[b_out] else "less_revealing"
                else:
                    kind = "transform_changed"
                changes.append(
                    Change(
                        kind,
                        name,
                        ev,
                        path,
                        b.treatment if b else "removed",
                        a.treatment,
                    )
                )
        for ev in old_events - set(new.agents[name].subscribes):
            changes.append(Change("stopped", name, ev, "*", "subscribed", "unsubscribed"))
        if name in old.agents:
            changes += _aggregate_changes(
                name, old.agents[name].aggregate, new.agents[name].aggregate
            )
    return changes


def _aggregate_changes(
    name: str, old: AggregateSpec | None, new: AggregateSpec | None
) -> list[Change]:
    """What changes in an aggregate agent's tables: a lower threshold, a shorter window, a
    new table, dimension or measure reveal more (finer or more figures); the reverse less.
    Becoming an aggregate agent reveals less than events; ceasing to be one, more."""
    if old is None and new is None:
        return []
    if old is None or new is None:
        kind: ChangeKind = "less_revealing" if new is not None else "more_revealing"
        return [
            Change(
                kind,
                name,
                "",
                "kind",
                "events" if old is None else "aggregate",
                "aggregate" if new is not None else "events",
            )
        ]
    from gateway.aggregates import parse_window

    out: list[Change] = []
    if new.k != old.k:
        kind = "more_revealing" if new.k < old.k else "less_revealing"
        out.append(Change(kind, name, "", "aggregate.k", str(old.k), str(new.k)))
    shortest = min(parse_window(w) for w in new.windows)
    if set(new.windows) != set(old.windows):
        kind = (
            "more_revealing"
            if shortest < min(parse_window(w) for w in old.windows)
            or set(new.windows) - set(old.windows)
            else "less_revealing"
        )
        out.append(
            Change(
                kind, name, "", "aggregate.windows", ", ".join(old.windows), ", ".join(new.windows)
            )
        )
    for t in sorted(set(old.tables) | set(new.tables)):
        before, after = old.tables.get(t), new.tables.get(t)
        path = f"aggregate.tables.{t}"
        if before is None and after is not None:
            out.append(Change("new_flow", name, ",".join(after.events), path, "", _table(after)))
        elif after is None and before is not None:
            out.append(Change("stopped", name, ",".join(before.events), path, _table(before), ""))
        elif before is not None and after is not None and before != after:
            grows = (
                set(after.dimensions) - set(before.dimensions)
                or set(after.measures) - set(before.measures)
                or set(after.events) - set(before.events)
            )
            kind = "more_revealing" if grows else "less_revealing"
            out.append(
                Change(kind, name, ",".join(after.events), path, _table(before), _table(after))
            )
    return out


def _table(t: TableSpec) -> str:
    return f"by {' x '.join(t.dimensions)}: {', '.join(t.measures)}"
