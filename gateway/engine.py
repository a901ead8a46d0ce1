"""The decision engine: for one event, one subject's consent state and one agent, what the
agent receives (or that it is withheld), and why. Fails closed.

The policy is compiled once into plans per (agent, event type, active purposes, purposes
with sensitive opt-in); a plan mirrors the event's field tree, so per-event work is one
walk of the event with no taxonomy or policy lookups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


# A compiled plan applied to an event body: (body, ctx, sent, transformed, removed,
# sent categories, transformed categories, removed categories) -> payload.
Applier = Callable[[dict[str, Any], Ctx, dict[str, None], dict[str, None], dict[str, None],
                    set[str], set[str], set[str]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Plan:
    agent: str
    event_type: str
    purposes: tuple[str, ...]
    legal_bases: tuple[str, ...]
    steps: tuple[Step, ...]
    sensitive_grants: frozenset[str]
    # The steps as straight-line Python (see _compile_applier); what decide() runs.
    apply: Applier | None = field(default=None, compare=False, repr=False)

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


def _compile_applier(steps: tuple[Step, ...]) -> Applier:
    """The steps as one generated Python function that does exactly what :func:`_apply`
    does -- same output, same paths in the same order, same categories, same fail-closed
    handling of a transform error -- without walking Step objects per event: field
    names, paths and categories become literals, transforms module-level names. About
    twice as fast as interpreting the plan, which is most of a decision's cost."""
    lines = ["def apply(s0, ctx, sent, transformed, removed, c_sent, c_trans, c_removed):"]
    consts: dict[str, Any] = {}

    def const(value: Any) -> str:
        name = f"K{len(consts)}"
        consts[name] = value
        return name

    def cats(target: str, step: Step) -> str:
        if len(step.categories) == 1:
            return f"{target}.add({next(iter(step.categories))!r})"
        return f"{target}.update({const(step.categories)})"

    def emit(steps: tuple[Step, ...], d: int, ind: str) -> None:
        src, out, v = f"s{d}", f"o{d}", f"v{d}"
        lines.append(f"{ind}{out} = {{}}")
        for st in steps:
            lines.append(f"{ind}{v} = {src}.get({st.name!r})")
            lines.append(f"{ind}if {v} is not None:")
            i2 = ind + "    "
            if st.kind == SEND:
                lines.append(f"{i2}{out}[{st.name!r}] = {v}")
                lines.append(f"{i2}sent[{st.path!r}] = None")
                lines.append(f"{i2}{cats('c_sent', st)}")
            elif st.kind == REMOVE:
                lines.append(f"{i2}removed[{st.path!r}] = None")
                lines.append(f"{i2}{cats('c_removed', st)}")
            elif st.kind == TRANSFORM:
                fn = const(st.fn)
                expr = (f"[{fn}(x, ctx) for x in {v}]" if st.many else f"{fn}({v}, ctx)")
                lines.append(f"{i2}try:")
                lines.append(f"{i2}    t = {expr}")
                lines.append(f"{i2}except (ValueError, TypeError):")
                lines.append(f"{i2}    removed[{st.path!r}] = None")
                lines.append(f"{i2}    {cats('c_removed', st)}")
                lines.append(f"{i2}else:")
                lines.append(f"{i2}    {out}[{st.name!r}] = t")
                lines.append(f"{i2}    transformed[{st.path!r}] = None")
                lines.append(f"{i2}    {cats('c_trans', st)}")
            elif st.many:
                items, sub = f"items{d}", f"o{d + 1}"
                lines.append(f"{i2}{items} = []")
                lines.append(f"{i2}for s{d + 1} in {v}:")
                emit(st.children, d + 1, i2 + "    ")
                lines.append(f"{i2}    if {sub}:")
                lines.append(f"{i2}        {items}.append({sub})")
                lines.append(f"{i2}if {items}:")
                lines.append(f"{i2}    {out}[{st.name!r}] = {items}")
            else:
                sub = f"o{d + 1}"
                lines.append(f"{i2}s{d + 1} = {v}")
                emit(st.children, d + 1, i2)
                lines.append(f"{i2}if {sub}:")
                lines.append(f"{i2}    {out}[{st.name!r}] = {sub}")

    emit(steps, 0, "    ")
    lines.append("    return o0")
    namespace: dict[str, Any] = dict(consts)
    # Only our own literals and names go into the source: nothing from an event.
    exec(compile("\n".join(lines), "<compiled plan>", "exec"), namespace)
    return namespace["apply"]  # type: ignore[no-any-return]


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
        self._uses: dict[tuple[str, str], tuple[tuple[str, bool], ...]] = {}
        self._flags: dict[frozenset[str], tuple[bool, bool]] = {}
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
                        steps, sensitive_ok, _compile_applier(steps))
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

    def _available(self, agent_name: str, event_type: str) -> tuple[tuple[str, bool], ...]:
        """The agent's data uses for the event type, each with whether it is marketing."""
        key = (agent_name, event_type)
        got = self._uses.get(key)
        if got is None:
            got = self._uses[key] = tuple(
                (u, self.taxonomy.is_marketing(u))
                for u in self.policy.agents[agent_name].purposes_for(event_type))
        return got

    def _category_flags(self, categories: set[str]) -> tuple[bool, bool]:
        """(any personal category, any sensitive one) among sent/transformed categories:
        the same few sets recur, so the answer is cached per set (bounded)."""
        key = frozenset(categories)
        got = self._flags.get(key)
        if got is None:
            personal = [c for c in key if c.startswith("user")]
            got = (bool(personal), any(self.taxonomy.is_sensitive(c) for c in personal))
            if len(self._flags) > 10_000:
                self._flags.clear()
            self._flags[key] = got
        return got

    def decide(self, agent_name: str, event_type: str, body: dict[str, Any],
               subject_type: str, state: ConsentState, ctx_date: Any) -> Decision:
        agent = self.policy.agents[agent_name]
        if state.erased:
            return Decision(agent_name, "withheld", "subject_erased")
        if subject_type not in agent.conditions.subject_types:
            return Decision(agent_name, "withheld", f"subject_type_{subject_type}_not_allowed")
        consent: list[str] = []
        if agent.conditions.requires_marketing_opt_in:
            if not state.marketing_opted_in:
                return Decision(agent_name, "withheld", "no_marketing_opt_in")
            consent.append(f"marketing:opt_in@{state.marketing_at}")
        available = self._available(agent_name, event_type)
        if any(m for _, m in available) and not state.marketing_allowed:
            purposes = tuple(u for u, m in available if not m)
        else:
            purposes = tuple(u for u, _ in available)
        if not purposes:
            reason = state.marketing_blocker if available else "no_purpose_for_event"
            return Decision(agent_name, "withheld", reason)
        grants = {}
        if state.sensitive:
            for u in purposes:
                g = state.sensitive_allowed(agent_name, u)
                if g is not None:
                    grants[u] = g
        plan = self.plan(agent_name, event_type, purposes, frozenset(grants))
        sent: dict[str, None] = {}
        transformed: dict[str, None] = {}
        removed: dict[str, None] = {}
        c_sent: set[str] = set()
        c_trans: set[str] = set()
        c_removed: set[str] = set()
        ctx = Ctx(self.pseudonym_keys[agent_name], ctx_date)
        assert plan.apply is not None
        payload = plan.apply(body, ctx, sent, transformed, removed, c_sent, c_trans,
                             c_removed)
        personal, sensitive = self._category_flags(c_sent | c_trans)
        if not personal:
            return Decision(agent_name, "withheld", "nothing_permitted",
                            paths_removed=list(removed),
                            categories_removed=sorted(c_removed))
        if (not consent and state.marketing == "opt_in"
                and any(m for u, m in available if m and u in purposes)):
            consent.append(f"marketing:opt_in@{state.marketing_at}")
        if sensitive:
            consent.extend(sorted({f"sensitive_opt_in:{g}" for g in grants.values()}))
        return Decision(
            agent_name, "disclosed", None, payload,
            purposes=list(plan.purposes), legal_bases=list(plan.legal_bases),
            paths_sent=list(sent), paths_transformed=list(transformed),
            paths_removed=list(removed),
            categories_sent=sorted(c_sent), categories_transformed=sorted(c_trans),
            categories_removed=sorted(c_removed), consent=consent,
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
