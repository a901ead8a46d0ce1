"""``gateway audit reconcile``: prove that nothing was lost, nothing disclosed unlogged, and
every decision one the gateway could have made.

Reads the input, disclosure, dead-letter and agent topics from the beginning (with their
headers) and the whole ledger, admits the input as the workers do (publisher signatures
included), groups it per customer, re-decides every record under its own consent state and
checks that state against the customer's events (see :mod:`gateway.audit`). Reports:

* gaps (failures) -- input events not accounted for (``lost``, or ``overdue`` when older
  than ``--pending-deadline``), agent messages without a record of their exact bytes,
  records missing from the ledger, records whose event is not on the input (``forged``) or
  whose MAC does not verify, records the engine decides otherwise (``conflict``) or under a
  state the customer could not have had (``impossible_state``), reused event ids;
* duplicates (harmless: at-least-once delivery), pending work, and warnings.

Exit status: 0 no gap, 1 gaps (with ``--strict`` also warnings or pending work), 2 an
error (no broker, no ledger, bad configuration).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from gateway.audit import Finding, ReconcileReport, reconcile_deployment, reconcile_until_settled
from gateway.audit.comparison import PENDING_DEADLINE
from gateway.audit.report import GAP_KINDS
from gateway.audit.snapshot import CONNECT_TIMEOUT, READ_TIMEOUT
from gateway.cli.common import (
    GatewayGroup,
    console,
    keys_dir_option,
    policy_option,
    settings_from,
)
from gateway.errors import GatewayError
from gateway.runtime import build_core


@click.group("audit", cls=GatewayGroup)
def audit() -> None:
    """Audit a running deployment against its own input."""


@audit.command("reconcile")
@policy_option
@keys_dir_option
@click.option("--bootstrap", help="Kafka bootstrap address [env GATEWAY_BOOTSTRAP_SERVERS].")
@click.option("--db", metavar="URL", help="Ledger URL [env GATEWAY_LEDGER_URL].")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to keep re-checking while work is still in flight (pending) "
    "or a gap may yet close (a lagging sink).",
)
@click.option(
    "--read-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=READ_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Time allowed to read each topic to its end.",
)
@click.option(
    "--connect-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=CONNECT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Time the broker has to answer before it is reported unreachable.",
)
@click.option(
    "--pending-deadline",
    type=click.FloatRange(min=0),
    default=PENDING_DEADLINE,
    show_default=True,
    metavar="SECONDS",
    help="Input older than this still missing its outputs (not yet committed) is a "
    "failure (overdue), not pending.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Also fail on warnings (malformed entries, records too old to re-decide) and on "
    "work still pending.",
)
@click.option(
    "--no-offsets",
    is_flag=True,
    help="Ignore the gateway's committed offsets: treat every input as processed "
    "(for a stopped deployment, or a broker without consumer-group offsets).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Findings listed per kind.",
)
def reconcile_cmd(
    policy: Path | None,
    keys_dir: Path | None,
    bootstrap: str | None,
    db: str | None,
    fmt: str,
    wait: float,
    read_timeout: float,
    connect_timeout: float,
    pending_deadline: float,
    strict: bool,
    no_offsets: bool,
    limit: int,
) -> None:
    """Reconcile input, disclosures, agent topics, dead letters and the ledger."""
    s = settings_from(policy, keys_dir, bootstrap_servers=bootstrap, ledger_url=db)
    if not s.bootstrap_servers:
        raise click.UsageError("no broker: pass --bootstrap or set GATEWAY_BOOTSTRAP_SERVERS")
    core = build_core(s)
    try:
        rep = reconcile_until_settled(
            lambda: reconcile_deployment(
                s,
                pipeline=core.pipeline,
                worker_key=core.worker_key,
                use_offsets=not no_offsets,
                read_timeout=read_timeout,
                connect_timeout=connect_timeout,
                pending_deadline=pending_deadline,
            ),
            wait,
            offsets=not no_offsets,
        )
    except (OSError, TimeoutError) as e:
        raise GatewayError(f"cannot read the deployment: {e}") from None
    except Exception as e:  # kafka-python's errors: name them, keep the one-line contract
        if type(e).__module__.startswith("kafka"):
            raise GatewayError(
                f"cannot read from Kafka at {s.bootstrap_servers}: {type(e).__name__}"
            ) from None
        raise
    if fmt == "json":
        sys.stdout.write(
            orjson.dumps(rep.to_dict(limit), option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        _print(rep, limit)
    if not rep.ok(strict):
        sys.exit(1)


def _print(rep: ReconcileReport, limit: int) -> None:
    c = rep.counts
    console.print(
        f"inputs {c['inputs']} ({c['events']} events in {c['customers']} customers, "
        f"{c['expected_dead_letters']} to dead-letter); records expected "
        f"{c['expected_records']}, checked {c['records_checked']}, on the "
        f"disclosure topic {c['disclosure_topic']}, in the ledger {c['ledger']}; "
        f"agent messages {c['agent_messages']} (expected {c['expected_messages']}); "
        f"dead letters {c['dead_letter_topic']}"
    )
    dups = {k: v for k, v in rep.duplicates.items() if v}
    console.print(
        "duplicates (harmless, recognised by id): "
        + (", ".join(f"{k} {v}" for k, v in sorted(dups.items())) or "none")
        + f"; re-issued messages {rep.reissued}"
    )
    for title, items in (("GAP", rep.gaps), ("warning", rep.warnings), ("pending", rep.pending)):
        by_kind: dict[str, list[Finding]] = {}
        for f in items:
            by_kind.setdefault(f.kind, []).append(f)
        for kind, fs in sorted(by_kind.items()):
            console.print(f"[bold]{title}[/bold] {kind}: {len(fs)}")
            for f in fs[:limit]:
                where = " ".join(
                    x
                    for x in (
                        f.position,
                        f.agent and f"agent={f.agent}",
                        f.event_id and f"event={f.event_id}",
                        f.record_id and f"id={f.record_id}",
                    )
                    if x
                )
                console.print(f"  {where}: {f.what}", markup=False)
            if len(fs) > limit:
                console.print(f"  … and {len(fs) - limit} more")
    s = rep.summary()
    verdict = "[green]no gaps[/green]" if rep.ok() else "[red]GAPS FOUND[/red]"
    console.print(
        f"{verdict}: "
        # The original three always (a clean run says so), any other kind when found.
        + ", ".join(
            f"{k} {s[k]}" for k in GAP_KINDS if k in ("lost", "unlogged", "unledgered") or s[k]
        )
        + f"; pending {s['pending']}; warnings {len(rep.warnings)}"
    )
