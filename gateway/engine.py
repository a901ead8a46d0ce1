"""The decision engine: for one event, one subject's consent state and one agent, what the
agent receives (or that it is withheld), and why. Fails closed.

The policy is compiled once into plans per (agent, event type, active purposes, purposes
with sensitive opt-in); a plan mirrors the event's field tree, so per-event work is one
walk of the event with no taxonomy or policy lookups.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gateway.consent import ConsentState
from gateway.policy import Agent, Policy, Rule
from gateway.taxonomy import Taxonomy, covers, default_taxonomy
from gateway.transforms import TRANSFORMS, Ctx, Fn
from schemas.registry import FieldNode, field_tree

SEND, TRANSFORM, REMOVE, NEST = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class Step:
    """A compiled field: what to do with it, and (for explain) why."""

    name: str
    path: str
    kind: int
    categories: frozenset[str]  # of all leaves below (one for a leaf)
    many: bool = False
    fn: Fn | None = None
    children: tuple[Step, ...] = ()
    purpose: str | None = None
    rule: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    agent: str
    event_type: str
    purposes: tuple[str, ...]
    legal_bases: tuple[str, ...]
    steps: tuple[Step, ...]
    sensitive_grants: frozenset[str]

    def leaves(self) -> list[Step]:
        """Every leaf decision (for explain), expanding uniform subtrees."""
        out: list[Step] = []

        def walk(steps: Iterable[Step]) -> None:
            for s in steps:
                if s.kind == NEST:
                    walk(s.children)
                else:
                    out.append(s)

        walk(self.steps)
        return out


@dataclass(slots=True)
class Decision:
    agent: str
    outcome: str  # disclosed | withheld | erasure_notice
    reason: str | None = None
    payload: dict[str, Any] | None = None
    purposes: list[str] = field(default_factory=list)
    legal_bases: list[str] = field(default_factory=list)
    paths_sent: list[str] = field(default_factory=list)
    paths_transformed: list[str] = field(default_factory=list)
    paths_removed: list[str] = field(default_factory=list)
    categories_sent: list[str] = field(default_factory=list)
    categories_transformed: list[str] = field(default_factory=list)
    categories_removed: list[str] = field(default_factory=list)
    consent: list[str] = field(default_factory=list)


# --- compiling ----------------------------------------------------------------------------


def _rule_for(purpose_rules: dict[str, Rule], category: str) -> tuple[str, Rule] | None:
    """The most specific rule whose category covers ``category``."""
    best: tuple[str, Rule] | None = None
    for key, rule in purpose_rules.items():
        if covers(key, category) and (best is None or len(key) > len(best[0])):
            best = (key, rule)
    return best


_PREFERENCE = {"send": 0, "transform": 1, "drop": 2}


def _leaf_step(node: FieldNode, agent: Agent, purposes: tuple[str, ...],
               sensitive_ok: frozenset[str], tax: Taxonomy) -> Step:
    cats = frozenset([node.category])
    sensitive = tax.is_sensitive(node.category)
    candidates: list[tuple[int, str, str, Rule]] = []
    blocked_sensitive = False
    for use in purposes:
        found = _rule_for(agent.purposes[use].categories, node.category)
        if found is None:
            continue
        if sensitive and found[1].action != "drop" and use not in sensitive_ok:
            blocked_sensitive = True
            continue
        candidates.append((_PREFERENCE[found[1].action], use, found[0], found[1]))
    if not candidates:
        reason = ("sensitive category without the subject's explicit opt-in"
                  if blocked_sensitive else "category not permitted for any active purpose")
        return Step(node.name, node.path, REMOVE, cats, node.many, reason=reason)
    _, use, key, rule = min(candidates, key=lambda c: c[0])
    why = f"{use}: rule for {key}"
    if sensitive:
        why += " (explicit opt-in recorded)"
    if rule.action == "drop":
        return Step(node.name, node.path, REMOVE, cats, node.many, purpose=use,
                    rule="drop", reason=f"{use}: {key} is dropped by the policy")
    if rule.action == "send":
        return Step(node.name, node.path, SEND, cats, node.many, purpose=use, rule="send",
                    reason=why)
    assert rule.transform is not None
    fn = TRANSFORMS[rule.transform].build(rule.params)
    return Step(node.name, node.path, TRANSFORM, cats, node.many, fn=fn, purpose=use,
                rule=rule.describe(), reason=why)


def _compile(nodes: tuple[FieldNode, ...], agent: Agent, purposes: tuple[str, ...],
             sensitive_ok: frozenset[str], tax: Taxonomy) -> tuple[Step, ...]:
    steps = []
    for node in nodes:
        if node.children is None:
            steps.append(_leaf_step(node, agent, purposes, sensitive_ok, tax))
            continue
        children = _compile(node.children, agent, purposes, sensitive_ok, tax)
        cats = frozenset().union(*(c.categories for c in children))
        kinds = {c.kind for c in children}
        # A subtree treated uniformly collapses to one step: cheaper to apply, and the
        # record names the subtree once instead of every leaf.
        kept = [c for c in children if c.kind != REMOVE]
        if len(kept) < len(children) and all(
                cat.startswith("system.") for c in kept for cat in c.categories):
            # Only operational leaves (e.g. an address's "kind") would remain of an object
            # whose personal data is removed: remove the object whole, not leave a shell.
            kinds = {REMOVE}
        if kinds == {REMOVE}:
            reasons = {c.reason for c in children if c.kind == REMOVE}
            reason = reasons.pop() if len(reasons) == 1 else "no field below is permitted"
            if kept:
                reason = f"its personal data is removed ({reason}); removed whole"
            steps.append(Step(node.name, node.path, REMOVE, cats, node.many, children=children,
                              reason=reason))
        elif kinds == {SEND}:
            steps.append(Step(node.name, node.path, SEND, cats, node.many, children=children,
                              purpose=children[0].purpose, rule="send",
                              reason=children[0].reason))
        else:
            steps.append(Step(node.name, node.path, NEST, cats, node.many, children=children))
    return tuple(steps)


# --- applying -----------------------------------------------------------------------------


class _Acc:
    __slots__ = ("c_removed", "c_sent", "c_trans", "removed", "sent", "transformed")

    def __init__(self) -> None:
        self.sent: dict[str, None] = {}
        self.transformed: dict[str, None] = {}
        self.removed: dict[str, None] = {}
        self.c_sent: set[str] = set()
        self.c_trans: set[str] = set()
        self.c_removed: set[str] = set()


def _apply(steps: tuple[Step, ...], src: dict[str, Any], acc: _Acc, ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in steps:
        v = src.get(s.name)
        if v is None:
            continue
        k = s.kind
        if k == SEND:
            out[s.name] = v
            acc.sent[s.path] = None
            acc.c_sent |= s.categories
        elif k == REMOVE:
            acc.removed[s.path] = None
            acc.c_removed |= s.categories
        elif k == TRANSFORM:
            try:
                out[s.name] = [s.fn(x, ctx) for x in v] if s.many else s.fn(v, ctx)  # type: ignore[misc]
            except (ValueError, TypeError):
                # Fail closed: a value the transform cannot handle is not sent raw.
                acc.removed[s.path] = None
                acc.c_removed |= s.categories
                continue
            acc.transformed[s.path] = None
            acc.c_trans |= s.categories
        else:
            if s.many:
                items = [_apply(s.children, x, acc, ctx) for x in v]
                items = [x for x in items if x]
                if items:
                    out[s.name] = items
            else:
                sub = _apply(s.children, v, acc, ctx)
                if sub:
                    out[s.name] = sub
    return out


class Engine:
    """Compiled policy. ``pseudonym_keys`` maps agent name -> its own pseudonym key."""

    def __init__(self, policy: Policy, pseudonym_keys: dict[str, bytes],
                 taxonomy: Taxonomy | None = None):
        self.policy = policy
        self.taxonomy = taxonomy or default_taxonomy()
        missing = set(policy.agents) - set(pseudonym_keys)
        if missing:
            raise ValueError(f"no pseudonym key for agents {sorted(missing)}")
        self.pseudonym_keys = pseudonym_keys
        self._plans: dict[tuple[str, str, tuple[str, ...], frozenset[str]], Plan] = {}
        self.subscribers: dict[str, list[str]] = {}
        for name, agent in policy.agents.items():
            for ev in agent.subscribes:
                self.subscribers.setdefault(ev, []).append(name)

    @property
    def policy_version(self) -> str:
        return self.policy.policy_version

    def plan(self, agent_name: str, event_type: str, purposes: tuple[str, ...],
             sensitive_ok: frozenset[str] = frozenset()) -> Plan:
        key = (agent_name, event_type, purposes, sensitive_ok)
        plan = self._plans.get(key)
        if plan is None:
            agent = self.policy.agents[agent_name]
            steps = _compile(field_tree(event_type), agent, purposes, sensitive_ok,
                             self.taxonomy)
            plan = Plan(agent_name, event_type, purposes,
                        tuple(sorted({agent.purposes[u].legal_basis for u in purposes})),
                        steps, sensitive_ok)
            self._plans[key] = plan
        return plan

    def full_plan(self, agent_name: str, event_type: str, *, sensitive_opt_in: bool = False,
                  marketing_allowed: bool = True) -> Plan:
        """The plan for a subject with the given consent (used by explain and lint)."""
        agent = self.policy.agents[agent_name]
        purposes = tuple(u for u in agent.purposes_for(event_type)
                         if marketing_allowed or not self.taxonomy.is_marketing(u))
        ok = frozenset(purposes) if sensitive_opt_in else frozenset()
        return self.plan(agent_name, event_type, purposes, ok)

    def decide(self, agent_name: str, event_type: str, body: dict[str, Any],
               subject_type: str, state: ConsentState, ctx_date: Any) -> Decision:
        agent = self.policy.agents[agent_name]
        tax = self.taxonomy
        if state.erased:
            return Decision(agent_name, "withheld", "subject_erased")
        if subject_type not in agent.conditions.subject_types:
            return Decision(agent_name, "withheld", f"subject_type_{subject_type}_not_allowed")
        consent: list[str] = []
        if agent.conditions.requires_marketing_opt_in:
            if not state.marketing_opted_in:
                return Decision(agent_name, "withheld", "no_marketing_opt_in")
            consent.append(f"marketing:opt_in@{state.marketing_at}")
        available = agent.purposes_for(event_type)
        purposes = tuple(u for u in available
                         if not tax.is_marketing(u) or state.marketing_allowed)
        if not purposes:
            reason = state.marketing_blocker if available else "no_purpose_for_event"
            return Decision(agent_name, "withheld", reason)
        grants = {}
        for u in purposes:
            g = state.sensitive_allowed(agent_name, u)
            if g is not None:
                grants[u] = g
        plan = self.plan(agent_name, event_type, purposes, frozenset(grants))
        acc = _Acc()
        ctx = Ctx(self.pseudonym_keys[agent_name], ctx_date)
        payload = _apply(plan.steps, body, acc, ctx)
        personal = {c for c in acc.c_sent | acc.c_trans if c.startswith("user")}
        if not personal:
            return Decision(agent_name, "withheld", "nothing_permitted",
                            paths_removed=list(acc.removed),
                            categories_removed=sorted(acc.c_removed))
        if (not consent and state.marketing == "opt_in"
                and any(tax.is_marketing(u) for u in purposes)):
            consent.append(f"marketing:opt_in@{state.marketing_at}")
        if any(tax.is_sensitive(c) for c in personal):
            consent.extend(sorted({f"sensitive_opt_in:{g}" for g in grants.values()}))
        return Decision(
            agent_name, "disclosed", None, payload,
            purposes=list(plan.purposes), legal_bases=list(plan.legal_bases),
            paths_sent=list(acc.sent), paths_transformed=list(acc.transformed),
            paths_removed=list(acc.removed),
            categories_sent=sorted(acc.c_sent), categories_transformed=sorted(acc.c_trans),
            categories_removed=sorted(acc.c_removed), consent=consent,
        )

    def subject_reference_for(self, agent_name: str, customer_id: str, ctx_date: Any) -> dict:
        """How ``agent_name`` knows the subject (for erasure notices)."""
        agent = self.policy.agents[agent_name]
        cat = "user.unique_id.customer_number"
        best: Rule | None = None
        for p in agent.purposes.values():
            found = _rule_for(p.categories, cat)
            if found and found[1].action != "drop" and (
                    best is None or _PREFERENCE[found[1].action] < _PREFERENCE[best.action]):
                best = found[1]
        if best is None:
            return {}
        if best.action == "send":
            return {"customer_id": customer_id}
        assert best.transform is not None
        fn = TRANSFORMS[best.transform].build(best.params)
        return {"customer_id": fn(customer_id, Ctx(self.pseudonym_keys[agent_name], ctx_date))}
