"""The decision engine: for one event, one subject's consent state and one agent, what the
agent receives (or that it is withheld), and why. Fails closed. For an erasure request, the
notice an agent that received data about the subject gets instead.

The policy is compiled once into plans per (agent, event type, active purposes, purposes
with sensitive opt-in); a plan mirrors the event's field tree, so per-event work is one
walk of the event with no taxonomy or policy lookups. A free-text field that may reveal a
vision condition compiles to a *hint* step: two treatments, the field's own and that of
the health category it may reveal, chosen per value by the category's detector (or by the
item's Rx flag).

Which purposes are active, and on which legal basis, depends on the subject's consent
state: marketing stops on an opt-out, an objection or Global Privacy Control; an
objection also stops every purpose on legitimate interests; a purpose on consent needs the
marketing opt-in; a marketing purpose on legitimate interests rests on consent once the
subject opted in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from gateway.aggregates import derive_rows
from gateway.consent import ConsentState
from gateway.hints import Detector, detector_for
from gateway.policy import Agent, Policy, Rule
from gateway.records import Outcome
from gateway.taxonomy import Taxonomy, covers, default_taxonomy
from gateway.transforms import TRANSFORMS, Ctx, Fn
from schemas.registry import FieldNode, field_tree

SEND, TRANSFORM, REMOVE, NEST, HINT = 0, 1, 2, 3, 4

SUBJECT_TYPES = frozenset(["consumer", "business"])

# An erasure request is never disclosed as an event: every agent that received data about
# the subject gets an erasure notice instead, under the controller's legal obligation.
ERASURE_EVENT = "erasure.requested"
NOTICE_PURPOSE = "essential.legal_obligation"
NOTICE_LEGAL_BASIS = "legal_obligation"
NOTICE_INSTRUCTION = (
    "Delete all personal data you received about this subject from us, and confirm to the "
    "controller."
)
_SUBJECT_CATEGORY = "user.unique_id.customer_number"
_OPERATIONS = frozenset(["system.operations"])


@dataclass(frozen=True, slots=True)
class Step:
    """A compiled field: what to do with it, and (for explain) why.

    A ``HINT`` step has two children, both leaf steps of the same field: the field's own
    treatment, and its treatment as the health category its value may reveal. The second
    applies when ``detector`` finds a hint in the value or the sibling flag ``when`` is
    set."""

    name: str
    path: str
    kind: int
    categories: frozenset[str]  # of all leaves below (one for a leaf; both for a hint)
    many: bool = False
    fn: Fn | None = None
    children: tuple[Step, ...] = ()
    purpose: str | None = None
    rule: str = ""
    reason: str = ""
    detector: Detector | None = None
    when: str | None = None
    hint: str = ""  # for a HINT step: what the detector looks for


# A compiled plan applied to an event body: (body, ctx, sent, transformed, removed,
# sent categories, transformed categories, removed categories) -> payload.
Applier = Callable[
    [
        dict[str, Any],
        Ctx,
        dict[str, None],
        dict[str, None],
        dict[str, None],
        set[str],
        set[str],
        set[str],
    ],
    dict[str, Any],
]


@dataclass(frozen=True, slots=True)
class Plan:
    agent: str
    event_type: str
    purposes: tuple[str, ...]
    steps: tuple[Step, ...]
    # The steps as straight-line Python (see _compile_applier); what decide() runs.
    apply: Applier | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class _Gate:
    """An agent's purposes for an event type that are active in one consent state."""

    purposes: tuple[str, ...]
    legal_bases: tuple[str, ...]  # the bases relied on, for this state
    blocker: str | None  # why a purpose was stopped (the reason when none is left)
    marketing: bool  # an active purpose is marketing (its consent state is cited)


@dataclass(slots=True)
class Decision:
    agent: str
    outcome: Outcome
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
    # For an aggregate agent (outcome ``contributed``): per table, the rows the event adds
    # (see gateway.aggregates.derive_rows); the payload is then None: nothing is sent.
    contribution: dict[str, Any] | None = None


# --- compiling ----------------------------------------------------------------------------


def _rule_for(purpose_rules: dict[str, Rule], category: str) -> tuple[str, Rule] | None:
    """The most specific rule whose category covers ``category``."""
    best: tuple[str, Rule] | None = None
    for key, rule in purpose_rules.items():
        if covers(key, category) and (best is None or len(key) > len(best[0])):
            best = (key, rule)
    return best


_PREFERENCE = {"send": 0, "transform": 1, "drop": 2}


def _leaf_step(
    node: FieldNode,
    agent: Agent,
    purposes: tuple[str, ...],
    sensitive_ok: frozenset[str],
    tax: Taxonomy,
) -> Step:
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
        reason = (
            "sensitive category without the subject's explicit opt-in"
            if blocked_sensitive
            else "category not permitted for any active purpose"
        )
        return Step(node.name, node.path, REMOVE, cats, node.many, reason=reason)
    _, use, key, rule = min(candidates, key=lambda c: c[0])
    why = f"{use}: rule for {key}"
    if sensitive:
        why += " (explicit opt-in recorded)"
    if rule.action == "drop":
        return Step(
            node.name,
            node.path,
            REMOVE,
            cats,
            node.many,
            purpose=use,
            rule="drop",
            reason=f"{use}: {key} is dropped by the policy",
        )
    if rule.action == "send":
        return Step(
            node.name, node.path, SEND, cats, node.many, purpose=use, rule="send", reason=why
        )
    assert rule.transform is not None
    fn = TRANSFORMS[rule.transform].build(rule.params)
    return Step(
        node.name,
        node.path,
        TRANSFORM,
        cats,
        node.many,
        fn=fn,
        purpose=use,
        rule=rule.describe(),
        reason=why,
    )


def _hint_step(
    node: FieldNode,
    agent: Agent,
    purposes: tuple[str, ...],
    sensitive_ok: frozenset[str],
    tax: Taxonomy,
) -> Step:
    """A free-text leaf that may reveal ``node.reveals``: its own treatment, and the one it
    gets as that category when its value (or the sibling flag) reveals it. A field removed
    either way is simply removed."""
    assert node.reveals is not None
    plain = _leaf_step(node, agent, purposes, sensitive_ok, tax)
    alt = _leaf_step(replace(node, category=node.reveals), agent, purposes, sensitive_ok, tax)
    if plain.kind == REMOVE and alt.kind == REMOVE:
        return plain
    detector, rule = detector_for(node.reveals)
    if node.reveals_when:
        rule += f", or the item's {node.reveals_when} flag is set"
    alt = replace(alt, reason=f"the value reveals {node.reveals}: {alt.reason}")
    return Step(
        node.name,
        node.path,
        HINT,
        plain.categories | alt.categories,
        node.many,
        children=(plain, alt),
        detector=detector,
        when=node.reveals_when,
        hint=rule,
    )


def _compile(
    nodes: tuple[FieldNode, ...],
    agent: Agent,
    purposes: tuple[str, ...],
    sensitive_ok: frozenset[str],
    tax: Taxonomy,
) -> tuple[Step, ...]:
    steps = []
    for node in nodes:
        if node.children is None:
            if node.reveals is not None:
                steps.append(_hint_step(node, agent, purposes, sensitive_ok, tax))
            else:
                steps.append(_leaf_step(node, agent, purposes, sensitive_ok, tax))
            continue
        children = _compile(node.children, agent, purposes, sensitive_ok, tax)
        cats = frozenset().union(*(c.categories for c in children))
        kinds = {c.kind for c in children}
        # A subtree treated uniformly collapses to one step: cheaper to apply, and the
        # record names the subtree once instead of every leaf.
        kept = [c for c in children if c.kind != REMOVE]
        if len(kept) < len(children) and all(
            cat.startswith("system.") for c in kept for cat in c.categories
        ):
            # Only operational leaves (e.g. an address's "kind") would remain of an object
            # whose personal data is removed: remove the object whole, not leave a shell.
            kinds = {REMOVE}
        if kinds == {REMOVE}:
            reasons = {c.reason for c in children if c.kind == REMOVE}
            reason = reasons.pop() if len(reasons) == 1 else "no field below is permitted"
            if kept:
                reason = f"its personal data is removed ({reason}); removed whole"
            steps.append(
                Step(
                    node.name, node.path, REMOVE, cats, node.many, children=children, reason=reason
                )
            )
        elif kinds == {SEND}:
            steps.append(
                Step(
                    node.name,
                    node.path,
                    SEND,
                    cats,
                    node.many,
                    children=children,
                    purpose=children[0].purpose,
                    rule="send",
                    reason=children[0].reason,
                )
            )
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


def _apply_leaf(s: Step, v: Any, out: dict[str, Any], acc: _Acc, ctx: Ctx) -> None:
    k = s.kind
    if k == SEND:
        out[s.name] = v
        acc.sent[s.path] = None
        acc.c_sent |= s.categories
    elif k == REMOVE:
        acc.removed[s.path] = None
        acc.c_removed |= s.categories
    else:
        fn = s.fn
        assert fn is not None  # every TRANSFORM step is built with its function
        try:
            out[s.name] = [fn(x, ctx) for x in v] if s.many else fn(v, ctx)
        except (ValueError, TypeError):
            # Fail closed: a value the transform cannot handle is not sent raw.
            acc.removed[s.path] = None
            acc.c_removed |= s.categories
            return
        acc.transformed[s.path] = None
        acc.c_trans |= s.categories


def _revealed(s: Step, src: dict[str, Any], v: Any) -> bool:
    """Whether a hint step's value reveals its health category."""
    assert s.detector is not None
    return bool(s.when is not None and src.get(s.when)) or s.detector(v)


def _apply(steps: tuple[Step, ...], src: dict[str, Any], acc: _Acc, ctx: Ctx) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in steps:
        v = src.get(s.name)
        if v is None:
            continue
        k = s.kind
        if k in (SEND, REMOVE, TRANSFORM):
            _apply_leaf(s, v, out, acc, ctx)
        elif k == HINT:
            plain, alt = s.children
            _apply_leaf(alt if _revealed(s, src, v) else plain, v, out, acc, ctx)
        elif s.many:
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

    def leaf(st: Step, out: str, v: str, ind: str) -> None:
        if st.kind == SEND:
            lines.append(f"{ind}{out}[{st.name!r}] = {v}")
            lines.append(f"{ind}sent[{st.path!r}] = None")
            lines.append(f"{ind}{cats('c_sent', st)}")
        elif st.kind == REMOVE:
            lines.append(f"{ind}removed[{st.path!r}] = None")
            lines.append(f"{ind}{cats('c_removed', st)}")
        else:
            fn = const(st.fn)
            expr = f"[{fn}(x, ctx) for x in {v}]" if st.many else f"{fn}({v}, ctx)"
            lines.append(f"{ind}try:")
            lines.append(f"{ind}    t = {expr}")
            lines.append(f"{ind}except (ValueError, TypeError):")
            lines.append(f"{ind}    removed[{st.path!r}] = None")
            lines.append(f"{ind}    {cats('c_removed', st)}")
            lines.append(f"{ind}else:")
            lines.append(f"{ind}    {out}[{st.name!r}] = t")
            lines.append(f"{ind}    transformed[{st.path!r}] = None")
            lines.append(f"{ind}    {cats('c_trans', st)}")

    def emit(steps: tuple[Step, ...], d: int, ind: str) -> None:
        src, out, v = f"s{d}", f"o{d}", f"v{d}"
        lines.append(f"{ind}{out} = {{}}")
        for st in steps:
            lines.append(f"{ind}{v} = {src}.get({st.name!r})")
            lines.append(f"{ind}if {v} is not None:")
            i2 = ind + "    "
            if st.kind in (SEND, REMOVE, TRANSFORM):
                leaf(st, out, v, i2)
            elif st.kind == HINT:
                plain, alt = st.children
                test = f"{const(st.detector)}({v})"
                if st.when is not None:
                    test = f"bool({src}.get({st.when!r})) or {test}"
                lines.append(f"{i2}if {test}:")
                leaf(alt, out, v, i2 + "    ")
                lines.append(f"{i2}else:")
                leaf(plain, out, v, i2 + "    ")
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
    return namespace["apply"]


class Engine:
    """Compiled policy. ``pseudonym_keys`` maps agent name -> its own pseudonym key."""

    def __init__(
        self, policy: Policy, pseudonym_keys: dict[str, bytes], taxonomy: Taxonomy | None = None
    ):
        self.policy = policy
        self.taxonomy = taxonomy or default_taxonomy()
        missing = set(policy.agents) - set(pseudonym_keys)
        if missing:
            raise ValueError(f"no pseudonym key for agents {sorted(missing)}")
        self.pseudonym_keys = pseudonym_keys
        self._plans: dict[tuple[str, str, tuple[str, ...], frozenset[str]], Plan] = {}
        self._gates: dict[tuple[str, str, bool, str, bool, bool], _Gate] = {}
        self._flags: dict[frozenset[str], tuple[bool, bool]] = {}
        self._notice_subjects: dict[str, Step] = {}
        self.subscribers: dict[str, list[str]] = {}
        for name, agent in policy.agents.items():
            for ev in agent.subscribes:
                self.subscribers.setdefault(ev, []).append(name)

    @property
    def policy_version(self) -> str:
        return self.policy.policy_version

    def plan(
        self,
        agent_name: str,
        event_type: str,
        purposes: tuple[str, ...],
        sensitive_ok: frozenset[str] = frozenset(),
    ) -> Plan:
        key = (agent_name, event_type, purposes, sensitive_ok)
        plan = self._plans.get(key)
        if plan is None:
            agent = self.policy.agents[agent_name]
            steps = _compile(field_tree(event_type), agent, purposes, sensitive_ok, self.taxonomy)
            plan = Plan(agent_name, event_type, purposes, steps, _compile_applier(steps))
            self._plans[key] = plan
        return plan

    def full_plan(
        self,
        agent_name: str,
        event_type: str,
        *,
        sensitive_opt_in: bool = False,
        marketing_allowed: bool = True,
        objection: bool = False,
        marketing_opted_in: bool = True,
    ) -> Plan:
        """The plan for a subject with the given consent (used by explain and lint): by
        default the most that can flow (marketing allowed and opted in, no objection)."""
        allowed = marketing_allowed and not objection
        blocker = "objection" if objection else "marketing_opt_out"
        gate = self.gate(
            agent_name, event_type, allowed, blocker, objection, marketing_opted_in and allowed
        )
        ok = frozenset(gate.purposes) if sensitive_opt_in else frozenset()
        return self.plan(agent_name, event_type, gate.purposes, ok)

    def gate(
        self,
        agent_name: str,
        event_type: str,
        marketing_allowed: bool,
        marketing_blocker: str,
        objection: bool,
        opted_in: bool,
    ) -> _Gate:
        """The agent's purposes for the event type that are active for a subject in this
        consent state, with the legal bases relied on (cached: a handful of states recur)."""
        key = (agent_name, event_type, marketing_allowed, marketing_blocker, objection, opted_in)
        got = self._gates.get(key)
        if got is None:
            got = self._gates[key] = self._select(
                self.policy.agents[agent_name],
                event_type,
                marketing_allowed,
                marketing_blocker,
                objection,
                opted_in,
            )
        return got

    def _select(
        self,
        agent: Agent,
        event_type: str,
        marketing_allowed: bool,
        marketing_blocker: str,
        objection: bool,
        opted_in: bool,
    ) -> _Gate:
        active: list[str] = []
        blocked: set[str] = set()
        marketing = False
        for use, purpose in agent.purposes_for(event_type).items():
            is_marketing = self.taxonomy.is_marketing(use)
            if is_marketing and not marketing_allowed:
                blocked.add(marketing_blocker)
            elif objection and purpose.legal_basis == "legitimate_interests":
                # The right to object reaches everything done on legitimate interests.
                blocked.add("objection")
            elif purpose.legal_basis == "consent" and not opted_in:
                blocked.add("no_marketing_opt_in")
            else:
                active.append(use)
                marketing = marketing or is_marketing
        blocker = next(
            (r for r in (marketing_blocker, "objection", "no_marketing_opt_in") if r in blocked),
            None,
        )
        bases = tuple(sorted({agent.purposes[u].basis(opted_in) for u in active}))
        return _Gate(tuple(active), bases, blocker, marketing)

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

    def decide(
        self,
        agent_name: str,
        event_type: str,
        body: dict[str, Any],
        subject_type: str,
        state: ConsentState,
        ctx_date: Any,
        subject_type_verified: bool = True,
    ) -> Decision:
        """What ``agent_name`` gets of the event for a subject of ``subject_type`` in
        ``state``. ``subject_type_verified`` is False while the subject's type is only what
        the event declares: agents restricted to some subject types then get nothing."""
        agent = self.policy.agents[agent_name]
        if state.erased:
            return Decision(agent_name, "withheld", "subject_erased")
        types = agent.conditions.subject_types
        if subject_type not in types:
            return Decision(agent_name, "withheld", f"subject_type_{subject_type}_not_allowed")
        if not subject_type_verified and not set(types) >= SUBJECT_TYPES:
            return Decision(agent_name, "withheld", "subject_type_unverified")
        if agent.aggregate is not None and state.gpc:
            # Global Privacy Control: the browser asks not to be tracked or shared; the
            # aggregates honour it like an objection.
            return Decision(agent_name, "withheld", "gpc")
        consent: list[str] = []
        if agent.conditions.requires_marketing_opt_in:
            if not state.marketing_opted_in:
                return Decision(agent_name, "withheld", "no_marketing_opt_in")
            consent.append(f"marketing:opt_in@{state.marketing_at}")
        allowed = state.marketing_allowed
        opted_in = allowed and state.marketing == "opt_in"
        gate = self.gate(
            agent_name, event_type, allowed, state.marketing_blocker, state.objection, opted_in
        )
        purposes = gate.purposes
        if not purposes:
            return Decision(agent_name, "withheld", gate.blocker or "no_purpose_for_event")
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
        payload = plan.apply(body, ctx, sent, transformed, removed, c_sent, c_trans, c_removed)
        personal, sensitive = self._category_flags(c_sent | c_trans)
        if not personal:
            return Decision(
                agent_name,
                "withheld",
                "nothing_permitted",
                paths_removed=list(removed),
                categories_removed=sorted(c_removed),
            )
        if gate.marketing and not consent:
            # The marketing state relied on: an opt-in (consent), or none given yet (the
            # soft opt-in on legitimate interests, which an opt-out would have ended).
            consent.append(
                f"marketing:opt_in@{state.marketing_at}" if opted_in else "marketing:unknown"
            )
        if sensitive:
            consent.extend(sorted({f"sensitive_opt_in:{g}" for g in grants.values()}))
        contribution = None
        if agent.aggregate is not None:
            # The permitted view is not sent: it is what the event may add to the agent's
            # aggregate tables (derived here, so consent and redaction come first).
            contribution = derive_rows(agent.aggregate, event_type, payload)
            if not contribution:
                return Decision(agent_name, "withheld", "nothing_to_aggregate")
        return Decision(
            agent_name,
            "contributed" if contribution is not None else "disclosed",
            None,
            None if contribution is not None else payload,
            purposes=list(purposes),
            legal_bases=list(gate.legal_bases),
            paths_sent=list(sent),
            paths_transformed=list(transformed),
            paths_removed=list(removed),
            categories_sent=sorted(c_sent),
            categories_transformed=sorted(c_trans),
            categories_removed=sorted(c_removed),
            consent=consent,
            contribution=contribution,
        )

    # --- erasure notices ---------------------------------------------------------------

    def notice_subject(self, agent_name: str) -> Step:
        """How an erasure notice names the subject to ``agent_name``: the customer number
        under the most revealing treatment any of the agent's purposes permits (sent before
        transformed; the agent must find the subject in what it received), or not at all
        when no purpose permits it."""
        step = self._notice_subjects.get(agent_name)
        if step is not None:
            return step
        agent = self.policy.agents[agent_name]
        cats = frozenset([_SUBJECT_CATEGORY])
        best: tuple[str, str, Rule] | None = None
        for use, p in agent.purposes.items():
            found = _rule_for(p.categories, _SUBJECT_CATEGORY)
            if (
                found
                and found[1].action != "drop"
                and (best is None or _PREFERENCE[found[1].action] < _PREFERENCE[best[2].action])
            ):
                best = (use, found[0], found[1])
        if best is None:
            step = Step(
                "customer_id",
                "subject.customer_id",
                REMOVE,
                cats,
                reason=f"no purpose of {agent_name} permits the customer number: the notice "
                "names no subject",
            )
        else:
            use, key, rule = best
            why = f"{use}: rule for {key} (the subject as the agent knows it)"
            if rule.action == "send":
                step = Step(
                    "customer_id",
                    "subject.customer_id",
                    SEND,
                    cats,
                    purpose=use,
                    rule="send",
                    reason=why,
                )
            else:
                assert rule.transform is not None
                step = Step(
                    "customer_id",
                    "subject.customer_id",
                    TRANSFORM,
                    cats,
                    fn=TRANSFORMS[rule.transform].build(rule.params),
                    purpose=use,
                    rule=rule.describe(),
                    reason=why,
                )
        self._notice_subjects[agent_name] = step
        return step

    def notice_steps(self, agent_name: str) -> tuple[Step, ...]:
        """Every field of an erasure notice to ``agent_name``, in payload order, and why
        (what ``policy explain`` shows for the erasure event)."""

        def fixed(name: str, reason: str) -> Step:
            return Step(
                name, name, SEND, _OPERATIONS, purpose=NOTICE_PURPOSE, rule="send", reason=reason
            )

        return (
            fixed("notice", "marks the message as an erasure notice"),
            fixed("event_id", "the erasure request's event id"),
            fixed("requested_at", "when the subject asked (the request's occurred_at)"),
            self.notice_subject(agent_name),
            fixed("instruction", "what the agent must do: delete and confirm"),
        )

    def erasure_notice(
        self,
        agent_name: str,
        event_id: str,
        requested_at: str,
        customer_id: str,
        ctx_date: date,
    ) -> Decision:
        """The notice to ``agent_name``, which received data about the subject, that the
        subject asked for erasure: purpose ``essential.legal_obligation``, whatever the
        subject's consent. The fields are those :meth:`notice_steps` explains."""
        step = self.notice_subject(agent_name)
        subject: dict[str, Any] = {}
        if step.kind == SEND:
            subject["customer_id"] = customer_id
        elif step.kind == TRANSFORM:
            assert step.fn is not None
            ctx = Ctx(self.pseudonym_keys[agent_name], ctx_date)
            subject["customer_id"] = step.fn(customer_id, ctx)
        payload = {
            "notice": "erasure",
            "event_id": event_id,
            "requested_at": requested_at,
            "subject": subject,
            "instruction": NOTICE_INSTRUCTION,
        }
        return Decision(
            agent_name,
            "erasure_notice",
            None,
            payload,
            purposes=[NOTICE_PURPOSE],
            legal_bases=[NOTICE_LEGAL_BASIS],
            consent=["erasure_requested"],
        )
