"""``gateway policy check|explain|diff`` and ``gateway schemas export``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from gateway.cli.common import console, keys_dir_option, policy_option, settings_from
from gateway.policy import load_policy
from gateway.policy_tools import (
    aggregate_summary,
    check_policy,
    conditions_summary,
    diff_policies,
    explain,
    offline_engine,
    retention_summary,
)
from schemas.registry import event_types, export_json_schemas

_STYLE = {"sent": "green", "transformed": "yellow", "removed": "red"}


@click.group()
def policy() -> None:
    """Check, explain and compare the policy (agents.yaml)."""


@policy.command()
@policy_option
@keys_dir_option
def check(policy: Path | None, keys_dir: Path | None) -> None:
    """Lint the policy against the event schemas and the taxonomy."""
    s = settings_from(policy, keys_dir)
    p = load_policy(s.policy_path)
    findings = check_policy(p, keys_dir=s.keys_dir)
    for f in findings:
        color = "red" if f.level == "error" else "yellow"
        console.print(f"[{color}]{f.level}[/{color}] {f.agent}: {f.message}")
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    console.print(
        f"{s.policy_path}: {len(p.agents)} agents, policy version "
        f"{p.policy_version}: {errors} error(s), {warnings} warning(s)"
    )
    if errors:
        sys.exit(1)


@policy.command("explain")
@policy_option
@click.option("--agent", "agent_name", required=True, help="Agent name.")
@click.option(
    "--event",
    "event_type",
    type=click.Choice(event_types()),
    help="Event type (may be left out for an aggregate agent: its tables, windows, threshold).",
)
@click.option(
    "--sensitive-opt-in",
    is_flag=True,
    help="As for a subject who explicitly opted in to sensitive data sharing.",
)
@click.option(
    "--marketing-opted-out",
    is_flag=True,
    help="As for a subject who opted out of marketing (or sent GPC).",
)
@click.option(
    "--objected",
    is_flag=True,
    help="As for a subject who objected to processing on legitimate interests.",
)
def explain_cmd(
    policy: Path | None,
    agent_name: str,
    event_type: str | None,
    sensitive_opt_in: bool,
    marketing_opted_out: bool,
    objected: bool,
) -> None:
    """Every field of EVENT for AGENT: sent, transformed or removed, and why (with what a
    health hint in a free-text value changes), the conditions, and how long records about
    the event's categories are kept."""
    s = settings_from(policy)
    p = load_policy(s.policy_path)
    if agent_name not in p.agents:
        raise click.BadParameter(
            f"unknown agent {agent_name!r}; the policy has {', '.join(p.agents)}",
            param_hint="--agent",
        )
    summary = aggregate_summary(p, agent_name)
    if summary:
        console.print(f"[bold]{agent_name}: aggregates only[/bold] (policy {p.policy_version})")
        for line in summary:
            console.print(f"  • {line}")
    if event_type is None:
        if not summary:
            raise click.BadParameter("give the event type", param_hint="--event")
        return
    engine = offline_engine(p)
    rows = explain(
        engine,
        agent_name,
        event_type,
        sensitive_opt_in=sensitive_opt_in,
        marketing_allowed=not marketing_opted_out,
        objection=objected,
    )
    table = Table(title=f"{agent_name} ← {event_type}  (policy {p.policy_version})")
    for col in ("field", "category", "outcome", "treatment", "purpose", "why"):
        table.add_column(col)
    for r in rows:
        st = _STYLE[r.outcome]
        why = f"{r.why}; {r.hint}" if r.hint else r.why
        table.add_row(r.path, r.category, f"[{st}]{r.outcome}[/{st}]", r.treatment, r.purpose, why)
    console.print(table)
    for line in conditions_summary(p, agent_name, event_type):
        console.print(f"  • {line}")
    for line in retention_summary(p, event_type):
        console.print(f"  • {line}")


@policy.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--fail-on-new-flow", is_flag=True, help="Exit 1 if anything would newly flow.")
def diff_cmd(old: Path, new: Path, fail_on_new_flow: bool) -> None:
    """What would newly flow to whom if NEW replaced OLD."""
    changes = diff_policies(load_policy(old), load_policy(new))
    if not changes:
        console.print("no change in what flows to any agent")
        return
    table = Table(title=f"{old} → {new}")
    for col in ("change", "agent", "event", "field", "before", "after"):
        table.add_column(col)
    for c in changes:
        color = "red" if c.kind in ("new_flow", "more_revealing", "agent_added") else "cyan"
        table.add_row(
            f"[{color}]{c.kind}[/{color}]", c.agent, c.event_type, c.path, c.before, c.after
        )
    console.print(table)
    new_flows = sum(c.kind in ("new_flow", "more_revealing", "agent_added") for c in changes)
    console.print(f"{len(changes)} change(s), {new_flows} that would disclose more")
    if fail_on_new_flow and new_flows:
        sys.exit(1)


@click.group()
def schemas() -> None:
    """Event schemas."""


@schemas.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def export_cmd(out_dir: Path) -> None:
    """Write a JSON Schema per event type to OUT_DIR (for publishers in other languages)."""
    for p in export_json_schemas(out_dir):
        console.print(str(p))
