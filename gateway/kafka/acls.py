"""Who may do what on the production Kafka cluster: the principals and their ACLs.

The broker runs the KRaft ``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found``
off, so a principal can do only what a row below allows. ``admin`` is the only super
user: the broker itself and the set-up step (which creates the topics, users and these
ACLs) use it, nothing else does. Every other principal gets the least it needs:

* a publisher writes the input topic, and nothing else;
* the gateway workers read the input topic, route by subject through the subjects topic
  (written and read), write the agent topics, the disclosure and dead-letter topics and
  the consent changelog (which they also read back when they take over a partition), and
  commit offsets in their consumer group. They create no topics: the set-up step does;
* the ledger sink reads the disclosure topic in its own group, and writes the agent
  topics for erasure notices;
* each agent reads its own topic in its own group, and nothing else;
* the auditor (``gateway audit reconcile``) reads the input, disclosure, dead-letter and
  agent topics, and the workers' committed offsets. It writes nothing.

The rows are templates: ``<agent>`` stands for each agent of the policy (its topic is the
policy's ``topic:``, ``agent.<agent>`` by default) and ``<publisher>`` for each publisher.
The README's table of principals and ACLs is :func:`render_markdown` of :func:`table`,
and a test keeps the two equal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gateway.settings import Settings

AGENT: Final = "<agent>"
PUBLISHER: Final = "<publisher>"
ADMIN: Final = "admin"
# The topic name of an agent in the templates; replaced by the policy's topic.
AGENT_TOPIC: Final = f"agent.{AGENT}"

Resource = Literal["topic", "group"]
Operation = Literal["Read", "Write", "Describe"]
_OPERATION_ORDER: Final = ("Read", "Write", "Describe")

# The compacted topic the workers keep consent state in; must equal
# gateway.stream.app.changelog_topic (a test checks it).
CONSENT_CHANGELOG_SUFFIX: Final = "-consent-changelog"
DEFAULT_SUBJECTS_TOPIC: Final = "gateway.subjects"


@dataclass(frozen=True, order=True)
class Grant:
    """``principal`` may do ``operations`` on the ``resource`` named ``name`` (a literal
    name: no prefixes, no wildcards)."""

    principal: str
    resource: Resource
    name: str
    operations: tuple[Operation, ...]


@dataclass(frozen=True)
class Names:
    """The topic and group names of one deployment."""

    input_topic: str
    subjects_topic: str
    disclosure_topic: str
    dead_letter_topic: str
    changelog_topic: str
    gateway_group: str
    ledger_group: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Names:
        return cls(
            input_topic=settings.input_topic,
            # A setting of the worker once it routes by subject; the default until then.
            subjects_topic=settings.subjects_topic,
            disclosure_topic=settings.disclosure_topic,
            dead_letter_topic=settings.dead_letter_topic,
            changelog_topic=f"{settings.app_id}{CONSENT_CHANGELOG_SUFFIX}",
            gateway_group=settings.app_id,
            ledger_group=f"{settings.app_id}-ledger",
        )


def agent_principal(agent: str) -> str:
    return f"agent-{agent}"


def agent_group(agent: str) -> str:
    return f"agent-{agent}"


def publisher_principal(publisher: str) -> str:
    return f"publisher-{publisher}"


def _g(principal: str, resource: Resource, name: str, *ops: Operation) -> Grant:
    return Grant(principal, resource, name, tuple(o for o in _OPERATION_ORDER if o in ops))


def table(names: Names) -> list[Grant]:
    """Every ACL as a template row, in the README's order."""
    publisher = publisher_principal(PUBLISHER)
    agent = agent_principal(AGENT)
    return [
        _g(publisher, "topic", names.input_topic, "Write", "Describe"),
        _g("gateway", "topic", names.input_topic, "Read", "Describe"),
        _g("gateway", "topic", names.subjects_topic, "Read", "Write", "Describe"),
        _g("gateway", "topic", names.changelog_topic, "Read", "Write", "Describe"),
        _g("gateway", "topic", names.disclosure_topic, "Write", "Describe"),
        _g("gateway", "topic", names.dead_letter_topic, "Write", "Describe"),
        _g("gateway", "topic", AGENT_TOPIC, "Write", "Describe"),
        _g("gateway", "group", names.gateway_group, "Read"),
        _g("ledger", "topic", names.disclosure_topic, "Read", "Describe"),
        _g("ledger", "topic", AGENT_TOPIC, "Write", "Describe"),
        _g("ledger", "group", names.ledger_group, "Read"),
        _g(agent, "topic", AGENT_TOPIC, "Read", "Describe"),
        _g(agent, "group", agent_group(AGENT), "Read"),
        _g("auditor", "topic", names.input_topic, "Read", "Describe"),
        _g("auditor", "topic", names.disclosure_topic, "Read", "Describe"),
        _g("auditor", "topic", names.dead_letter_topic, "Read", "Describe"),
        _g("auditor", "topic", AGENT_TOPIC, "Read", "Describe"),
        _g("auditor", "group", names.gateway_group, "Describe"),
    ]


def expand(
    rows: Iterable[Grant], agents: Mapping[str, str], publishers: Sequence[str]
) -> list[Grant]:
    """The concrete ACLs: each row once per agent (``agents`` maps name to topic) or
    publisher it names, the others as they are. Sorted, without duplicates."""
    out: set[Grant] = set()
    for row in rows:
        text = row.principal + row.name
        if AGENT in text and PUBLISHER in text:
            raise ValueError(f"a row names both an agent and a publisher: {row}")
        if AGENT in text:
            for agent, topic in agents.items():
                name = topic if row.name == AGENT_TOPIC else row.name.replace(AGENT, agent)
                principal = row.principal.replace(AGENT, agent)
                out.add(Grant(principal, row.resource, name, row.operations))
        elif PUBLISHER in text:
            for publisher in publishers:
                principal = row.principal.replace(PUBLISHER, publisher)
                out.add(Grant(principal, row.resource, row.name, row.operations))
        else:
            out.add(row)
    return sorted(out)


def principals(grants: Iterable[Grant]) -> list[str]:
    """The principals that need a SCRAM user, ``admin`` first."""
    return [ADMIN, *sorted({g.principal for g in grants} - {ADMIN})]


def topics(grants: Iterable[Grant]) -> list[str]:
    return sorted({g.name for g in grants if g.resource == "topic"})


# --- the README's table -----------------------------------------------------------------

_HEADER: Final = ("principal", "resource", "name", "operations")


def render_markdown(rows: Iterable[Grant]) -> str:
    """The rows as the README's Markdown table (four columns)."""
    lines = [
        "| " + " | ".join(_HEADER) + " |",
        "| " + " | ".join("---" for _ in _HEADER) + " |",
    ]
    for r in rows:
        lines.append(f"| `{r.principal}` | {r.resource} | `{r.name}` | {', '.join(r.operations)} |")
    return "\n".join(lines) + "\n"


def parse_markdown(text: str) -> list[Grant]:
    """The rows of the first Markdown table in ``text`` whose header is
    principal | resource | name | operations. Raises ValueError if there is none or a row
    does not parse."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if _cells(line) == list(_HEADER)), None)
    if header is None:
        raise ValueError("no table with the columns " + " | ".join(_HEADER))
    rows: list[Grant] = []
    for line in lines[header + 2 :]:
        cells = _cells(line)
        if cells is None:
            break
        if len(cells) != len(_HEADER):
            raise ValueError(f"not a row of {len(_HEADER)} cells: {line!r}")
        principal, resource, name, ops = cells
        if resource not in ("topic", "group"):
            raise ValueError(f"unknown resource type {resource!r} in {line!r}")
        operations = [o.strip() for o in ops.split(",")]
        unknown = [o for o in operations if o not in _OPERATION_ORDER]
        if unknown:
            raise ValueError(f"unknown operation(s) {unknown} in {line!r}")
        rows.append(
            Grant(
                principal.strip("`"),
                resource,  # type: ignore[arg-type]
                name.strip("`"),
                tuple(operations),  # type: ignore[arg-type]
            )
        )
    return rows


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not (line.startswith("|") and line.endswith("|")):
        return None
    return [c.strip() for c in re.split(r"(?<!\\)\|", line[1:-1])]
