"""The policy file (agents.yaml): its model, and a loader whose errors name the line.

Structure::

    version: 1
    controller: {legal_name, contact}
    agents:
      NAME:
        description, recipient: {legal_name, address, role, contract},
        topic, public_key, subscribes: [event types],
        conditions: {subject_types: [consumer, business], requires_marketing_opt_in: bool}
        timestamp_precision: day | hour | minute | second     # optional, default day
        purposes:
          DATA_USE:
            legal_basis: contract | consent | legitimate_interests | legal_obligation
            with_consent: consent                 # optional, marketing only: the basis
                                                  # once the subject opted in
            events: [subset of subscribes]        # optional, default: all subscribed
            categories:
              CATEGORY: send | drop | {transform: NAME, PARAM: VALUE...}
    retention:
      default: {period: 3y, basis: why}
      categories:
        CATEGORY: {period: 7y, basis: why}        # d, w, m (31 days) or y (365.25 days)

    publishers:                                   # optional: who may publish what
      NAME:
        description: ...
        key: publishers/NAME.pub | "ed25519:<base64>"   # Ed25519 public key, or
        secret: publishers/NAME.secret                  # an HMAC-SHA256 secret file (0600)
        events: [event types it may send]

A category rule covers the category's descendants; the most specific rule wins.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.errors import PolicyError
from gateway.taxonomy import Taxonomy, covers, default_taxonomy
from gateway.transforms import TRANSFORMS
from schemas.registry import event_types, schema_fingerprint_material

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Rule(_M):
    """What an agent gets for one category: the raw value, a transform of it, or nothing."""

    action: Literal["send", "transform", "drop"]
    transform: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        return _parse_rule(raw)

    def describe(self) -> str:
        if self.action != "transform":
            return self.action
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.transform}({args})"


def _parse_rule(raw: Any) -> Any:
    if isinstance(raw, Rule):
        return raw
    if raw in ("send", "drop"):
        return {"action": raw}
    if isinstance(raw, str):
        raw = {"transform": raw}
    if isinstance(raw, dict) and "action" in raw:
        return raw
    if isinstance(raw, dict) and "transform" in raw:
        params = {k: v for k, v in raw.items() if k != "transform"}
        name = raw["transform"]
        if name == "drop":
            return {"action": "drop"}
        if name not in TRANSFORMS:
            known = ", ".join(sorted(TRANSFORMS))
            raise ValueError(f"unknown transform {name!r} (known: send, {known})")
        TRANSFORMS[name].build(params)  # validates the parameters now, not per event
        return {"action": "transform", "transform": name, "params": params}
    raise ValueError("a category rule is 'send', 'drop' or {transform: NAME, ...params}")


LegalBasis = Literal["contract", "consent", "legitimate_interests", "legal_obligation"]


class Purpose(_M):
    """A data use of an agent: its legal basis, the events it covers, the categories it gets.

    ``legal_basis`` is the basis relied on for a subject who has not opted in; a marketing
    purpose may name in ``with_consent`` the basis relied on once the subject has (consent).
    A purpose whose ``legal_basis`` is consent flows only for subjects who opted in."""

    legal_basis: LegalBasis
    with_consent: Literal["consent"] | None = None
    events: list[str] | None = None
    categories: dict[str, Rule]

    def basis(self, opted_in: bool) -> LegalBasis:
        """The legal basis relied on for a subject who has (or has not) opted in."""
        if opted_in and self.with_consent is not None:
            return self.with_consent
        return self.legal_basis

    @field_validator("categories", mode="before")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if not isinstance(v, dict) or not v:
            raise ValueError("categories must be a non-empty mapping CATEGORY: rule")
        return v


class RecipientSpec(_M):
    legal_name: str
    address: str
    role: Literal["service_provider", "third_party", "government"]
    contract: str | None = None


class Conditions(_M):
    subject_types: list[Literal["consumer", "business"]] = ["consumer", "business"]
    requires_marketing_opt_in: bool = False


TimestampPrecision = Literal["day", "hour", "minute", "second"]


K_FLOOR = 5  # the smallest threshold `policy check` accepts for an aggregate agent
K_DEFAULT = 10


class TableSpec(_M):
    """One table an aggregate agent receives per window: its dimensions (one or two, from
    the closed vocabulary in :mod:`gateway.aggregates`), its measures, and the event types
    it counts."""

    events: list[str] = Field(min_length=1)
    dimensions: list[str] = Field(min_length=1, max_length=2)
    measures: list[str] = Field(default_factory=lambda: ["count", "customers"], min_length=1)


class AggregateSpec(_M):
    """What an aggregate-only agent receives: tables per tumbling window, each cell from at
    least ``k`` distinct customers (with complementary suppression)."""

    k: int = K_DEFAULT
    windows: list[str] = Field(min_length=1)
    grace: str = "10m"
    tables: dict[str, TableSpec] = Field(min_length=1)

    @property
    def measures(self) -> list[str]:
        return sorted({m for t in self.tables.values() for m in t.measures})

    @property
    def dimensions(self) -> list[str]:
        return sorted({d for t in self.tables.values() for d in t.dimensions})


class Agent(_M):
    description: str
    recipient: RecipientSpec
    topic: str
    public_key: str
    subscribes: list[str] = Field(min_length=1)
    conditions: Conditions = Conditions()
    # How precisely the agent learns when an event happened: an exact time shared by two
    # agents would be a key to join their data.
    timestamp_precision: TimestampPrecision = "day"
    purposes: dict[str, Purpose] = Field(min_length=1)
    # ``aggregate``: the agent never receives an event, only windowed aggregate tables
    # (``aggregate:``); its per-event decision is a contribution to them.
    kind: Literal["events", "aggregate"] = "events"
    aggregate: AggregateSpec | None = None

    @model_validator(mode="after")
    def _kind(self) -> Agent:
        if (self.kind == "aggregate") != (self.aggregate is not None):
            raise ValueError(
                "an agent of kind aggregate needs an aggregate: block (k, windows, grace, "
                "tables), and only such an agent may have one"
            )
        return self

    def purposes_for(self, event_type: str) -> dict[str, Purpose]:
        return {
            use: p
            for use, p in self.purposes.items()
            if event_type in (p.events if p.events is not None else self.subscribes)
        }


class PublisherSpec(_M):
    """A publisher the gateway accepts events from: what its signatures verify with (an
    Ed25519 public ``key`` or an HMAC-SHA256 ``secret`` file) and the event types it may
    send."""

    description: str = ""
    key: str | None = None
    secret: str | None = None
    events: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_key(self) -> PublisherSpec:
        if (self.key is None) == (self.secret is None):
            raise ValueError(
                "give a publisher exactly one of key (an Ed25519 public key: a path relative"
                " to the keys directory, or 'ed25519:<base64>') and secret (an HMAC-SHA256"
                " secret file)"
            )
        return self


class Controller(_M):
    legal_name: str
    contact: str


_PERIOD_RE = re.compile(r"^([1-9][0-9]{0,3})([dwmy])$")


def parse_period(text: str) -> timedelta:
    """``<n>d``, ``<n>w``, ``<n>m`` or ``<n>y`` as a duration. A month counts as 31 days and a
    year as 365.25 days rounded up, so a period is never shorter than the calendar months or
    years it names."""
    m = _PERIOD_RE.match(text)
    if m is None:
        raise ValueError(
            "a retention period is a number and a unit: d (days), w (weeks), m (months) or "
            "y (years), e.g. 90d or 7y"
        )
    n, unit = int(m.group(1)), m.group(2)
    days = {"d": n, "w": 7 * n, "m": 31 * n, "y": math.ceil(365.25 * n)}[unit]
    return timedelta(days=days)


class RetentionRule(_M):
    """How long records about a category are kept, and why (the policy's own reason)."""

    period: str
    basis: str = Field(min_length=1)

    @field_validator("period")
    @classmethod
    def _period(cls, v: str) -> str:
        parse_period(v)
        return v

    @property
    def duration(self) -> timedelta:
        return parse_period(self.period)


class Retention(_M):
    """Per-category retention periods: a category's most specific rule applies, the
    default to a category no rule covers."""

    default: RetentionRule
    categories: dict[str, RetentionRule] = Field(default_factory=dict)

    def rule_for(self, category: str) -> tuple[str | None, RetentionRule]:
        """(the rule's category key, or None for the default; the rule) for ``category``."""
        best: str | None = None
        for key in self.categories:
            if covers(key, category) and (best is None or len(key) > len(best)):
                best = key
        return (best, self.categories[best]) if best is not None else (None, self.default)

    def retention_for(self, categories: Iterable[str]) -> timedelta:
        """How long to keep what concerns ``categories`` (a record's categories, a subject's
        consent state): the longest period any of them needs -- keeping a record shorter
        would lose what a longer-lived category must keep. No category: the default."""
        periods = [self.rule_for(c)[1].duration for c in categories]
        return max(periods, default=self.default.duration)


class Policy(_M):
    version: Literal[1]
    controller: Controller
    agents: dict[str, Agent] = Field(min_length=1)
    retention: Retention
    publishers: dict[str, PublisherSpec] = Field(default_factory=dict)
    # Not part of the file: set by the loader.
    source: str = Field("<memory>", exclude=True)
    digest: str = Field("", exclude=True)

    @property
    def policy_version(self) -> str:
        """Hash of the policy and the event schemas: names what rules a record was made under."""
        return self.digest


# --- loading -----------------------------------------------------------------------------


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)  # a mapping key's own line wins
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _lines(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*path, i), out)


def _line_for(lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    loc = tuple(x for x in loc if not (isinstance(x, str) and x.startswith("function-")))
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def policy_digest(text: bytes) -> str:
    h = hashlib.sha256()
    h.update(text)
    h.update(b"\x00")
    h.update(schema_fingerprint_material())
    return "pv_" + h.hexdigest()[:16]


def parse_policy(text: str, source: str = "<memory>", taxonomy: Taxonomy | None = None) -> Policy:
    tax = taxonomy or default_taxonomy()
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PolicyError(
            f"not valid YAML: {getattr(e, 'problem', e)}",
            path=source,
            line=mark.line + 1 if mark else None,
        ) from None
    if node is None or not isinstance(data, dict):
        raise PolicyError(
            "the policy must be a mapping with version, controller, agents", path=source, line=1
        )
    lines: dict[tuple[Any, ...], int] = {}
    _lines(node, (), lines)
    try:
        policy = Policy.model_validate(
            {**data, "source": source, "digest": policy_digest(text.encode())}
        )
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        where = ".".join(str(x) for x in loc if not str(x).startswith("function-"))
        raise PolicyError(
            f"{where}: {err['msg']}", path=source, line=_line_for(lines, loc)
        ) from None
    _check_semantics(policy, tax, source, lines)
    return policy


def _check_semantics(
    policy: Policy, tax: Taxonomy, source: str, lines: dict[tuple[Any, ...], int]
) -> None:
    known_events = set(event_types())
    topics: dict[str, str] = {}
    _check_publishers(policy, known_events, source, lines)

    def fail(msg: str, *loc: Any) -> None:
        raise PolicyError(msg, path=source, line=_line_for(lines, loc))

    for name, agent in policy.agents.items():
        at = ("agents", name)
        if not NAME_RE.match(name):
            fail(f"agent name {name!r} must be lower-case letters, digits, '_' or '-'", *at)
        if not TOPIC_RE.match(agent.topic):
            fail(
                f"agent {name}: topic {agent.topic!r} is not a valid Kafka topic name", *at, "topic"
            )
        if agent.topic in topics:
            fail(
                f"agent {name}: topic {agent.topic!r} is already used by agent "
                f"{topics[agent.topic]!r}; each agent needs its own topic",
                *at,
                "topic",
            )
        topics[agent.topic] = name
        for i, ev in enumerate(agent.subscribes):
            if ev not in known_events:
                fail(
                    f"agent {name}: unknown event type {ev!r} (known: "
                    f"{', '.join(sorted(known_events))})",
                    *at,
                    "subscribes",
                    i,
                )
        for use, purpose in agent.purposes.items():
            pat = (*at, "purposes", use)
            if not tax.is_use(use):
                fail(
                    f"agent {name}: {use!r} is not a data use in the Fides taxonomy or its "
                    f"declared extensions (schemas/taxonomy.yaml)",
                    *pat,
                )
            for i, ev in enumerate(purpose.events or []):
                if ev not in agent.subscribes:
                    fail(
                        f"agent {name}, purpose {use}: event {ev!r} is not in the agent's "
                        f"subscribes list",
                        *pat,
                        "events",
                        i,
                    )
            for category in purpose.categories:
                if not tax.is_category(category):
                    fail(
                        f"agent {name}, purpose {use}: {category!r} is not a data category "
                        f"in the Fides taxonomy or schemas/taxonomy.yaml",
                        *pat,
                        "categories",
                        category,
                    )
            marketing = tax.is_use(use) and tax.is_marketing(use)
            if purpose.with_consent is not None and not marketing:
                fail(
                    f"agent {name}, purpose {use}: with_consent is for marketing purposes only "
                    f"(the consent the gateway records is the marketing opt-in)",
                    *pat,
                    "with_consent",
                )
            if purpose.with_consent is not None and purpose.legal_basis == "consent":
                fail(
                    f"agent {name}, purpose {use}: with_consent names the basis once the "
                    f"subject opted in; legal_basis is already consent (drop with_consent)",
                    *pat,
                    "with_consent",
                )
            if purpose.legal_basis == "consent" and not marketing:
                fail(
                    f"agent {name}, purpose {use}: legal_basis consent is for marketing "
                    f"purposes only: the consent the gateway records is the marketing opt-in "
                    f"(sensitive categories need their own opt-in whatever the basis)",
                    *pat,
                    "legal_basis",
                )
        if agent.aggregate is not None:
            _check_aggregate(name, agent, tax, fail)
    for category in policy.retention.categories:
        if not tax.is_category(category):
            fail(
                f"retention: {category!r} is not a data category in the Fides taxonomy or "
                f"schemas/taxonomy.yaml",
                "retention",
                "categories",
                category,
            )


def _check_aggregate(name: str, agent: Agent, tax: Taxonomy, fail: Any) -> None:
    """An aggregate agent: a threshold no lower than the floor, windows and grace that
    parse, tables over the closed vocabulary of dimensions -- never a direct identifier --
    derivable from the events they count, from categories the agent's rules permit."""
    from gateway.aggregates import DIMENSIONS, DIRECT_IDENTIFIERS, MEASURES, parse_window

    spec = agent.aggregate
    assert spec is not None
    at = ("agents", name, "aggregate")
    if spec.k < K_FLOOR:
        fail(
            f"agent {name}: threshold k={spec.k} is below the floor of {K_FLOOR} distinct "
            "customers per published cell",
            *at,
            "k",
        )
    for i, w in enumerate(spec.windows):
        try:
            parse_window(w)
        except ValueError as e:
            fail(f"agent {name}: window {w!r}: {e}", *at, "windows", i)
    try:
        parse_window(spec.grace)
    except ValueError as e:
        fail(f"agent {name}: grace {spec.grace!r}: {e}", *at, "grace")
    permitted = [
        key
        for p in agent.purposes.values()
        for key, r in p.categories.items()
        if r.action != "drop"
    ]
    for tname, table in spec.tables.items():
        tat = (*at, "tables", tname)
        if not NAME_RE.match(tname):
            fail(
                f"agent {name}: table name {tname!r} must be lower-case letters, digits, '_'", *tat
            )
        for i, ev in enumerate(table.events):
            if ev not in agent.subscribes:
                fail(
                    f"agent {name}, table {tname}: event {ev!r} is not in the agent's "
                    "subscribes list",
                    *tat,
                    "events",
                    i,
                )
        if len(set(table.dimensions)) != len(table.dimensions):
            fail(f"agent {name}, table {tname}: a dimension is named twice", *tat, "dimensions")
        for i, dim in enumerate(table.dimensions):
            if dim in DIRECT_IDENTIFIERS:
                fail(
                    f"agent {name}, table {tname}: {dim!r} is a direct identifier (or finer "
                    "than a window); an aggregate is never broken down by one",
                    *tat,
                    "dimensions",
                    i,
                )
            if dim not in DIMENSIONS:
                fail(
                    f"agent {name}, table {tname}: unknown dimension {dim!r} (known: "
                    f"{', '.join(DIMENSIONS)})",
                    *tat,
                    "dimensions",
                    i,
                )
            derivable, sources, _ = DIMENSIONS[dim]
            missing = [ev for ev in table.events if ev not in derivable]
            if missing:
                fail(
                    f"agent {name}, table {tname}: dimension {dim!r} cannot be derived from "
                    f"{', '.join(missing)} (only from {', '.join(sorted(derivable))})",
                    *tat,
                    "dimensions",
                    i,
                )
            for src in sources:
                if src.startswith("user") and not any(covers(k, src) for k in permitted):
                    fail(
                        f"agent {name}, table {tname}: dimension {dim!r} is derived from "
                        f"{src}, which no purpose of the agent permits",
                        *tat,
                        "dimensions",
                        i,
                    )
        if "product_category" in table.dimensions and table.events != ["order.placed"]:
            fail(
                f"agent {name}, table {tname}: product_category counts order lines: the "
                "table's events must be [order.placed]",
                *tat,
                "events",
            )
        for i, m in enumerate(table.measures):
            if m not in MEASURES:
                fail(
                    f"agent {name}, table {tname}: unknown measure {m!r} (known: "
                    f"{', '.join(MEASURES)})",
                    *tat,
                    "measures",
                    i,
                )
            bad = [ev for ev in table.events if ev not in MEASURES[m][0]]
            if bad:
                fail(
                    f"agent {name}, table {tname}: measure {m!r} does not apply to "
                    f"{', '.join(bad)}",
                    *tat,
                    "measures",
                    i,
                )
        if "customers" not in table.measures:
            fail(
                f"agent {name}, table {tname}: measures must include customers (the count "
                "the threshold is applied to)",
                *tat,
                "measures",
            )


def _check_publishers(
    policy: Policy, known_events: set[str], source: str, lines: dict[tuple[Any, ...], int]
) -> None:
    for name, spec in policy.publishers.items():
        at = ("publishers", name)
        if not NAME_RE.match(name):
            raise PolicyError(
                f"publisher name {name!r} must be lower-case letters, digits, '_' or '-'",
                path=source,
                line=_line_for(lines, at),
            )
        for i, ev in enumerate(spec.events):
            if ev not in known_events:
                raise PolicyError(
                    f"publisher {name}: unknown event type {ev!r} (known: "
                    f"{', '.join(sorted(known_events))})",
                    path=source,
                    line=_line_for(lines, (*at, "events", i)),
                )
        for field_name in ("key", "secret"):
            ref = getattr(spec, field_name)
            if ref is not None and not ref.strip():
                raise PolicyError(
                    f"publisher {name}: {field_name} is empty",
                    path=source,
                    line=_line_for(lines, (*at, field_name)),
                )


def load_policy(path: Path | str, taxonomy: Taxonomy | None = None) -> Policy:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise PolicyError(
            "policy file not found; set GATEWAY_POLICY_PATH or run from the "
            "project directory that holds agents.yaml",
            path=str(path),
        ) from None
    except OSError as e:
        raise PolicyError(f"cannot read policy file: {e.strerror}", path=str(path)) from None
    return parse_policy(text, str(path), taxonomy)
