"""``gateway log``: review and verify the disclosure log.

The store URL and keys come from ``Settings`` (GATEWAY_LEDGER_URL, GATEWAY_KEYS_DIR) unless
``--db`` / ``--keys-dir`` are given. Reading needs no key except for ``--subject`` (the
pseudonym key turns a customer id into the log's subject reference). ``verify`` uses the
signing key when present, to name the exact bad record; with only the public key it still
detects tampering, and with a log checkpoint saved earlier (``--against``) a rollback.
Which key files are read, and in which order, is decided in ``gateway.ledger.access`` for
every command and the review page alike.

``record-disclosure`` records a disclosure made outside the stream (a court order's answer,
a debt collector, a merger: the privacy policy's other kinds of sharing) in the same log,
so every report includes it.

``prune --by-policy`` applies the policy file's retention periods record by record (the
longest period of the categories a record disclosed, counted from when it was recorded);
``prune --before`` is a blanket cut by date.

A customer id, subject reference or agent name the log has never seen is an error (exit 2)
that says how to check it, not an empty answer: typos look like that. Tables are laid out
for the terminal's width (``render.print_table``).

Exit status: 0 fine, 1 verification failed, 2 an error the user can fix (message says how).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
import orjson
from rich.console import Console

from gateway import keys as keystore
from gateway.cli.common import (
    FittedConsole,
    GatewayGroup,
    db_option,
    keys_dir_option,
    policy_option,
    settings_from,
)
from gateway.cli.witness import read_checkpoint, witness_key_options, witness_keys
from gateway.errors import ConfigError, LedgerError, VerificationError
from gateway.ledger import access, render
from gateway.ledger.location import locate_record
from gateway.ledger.manual import DisclosureRequest, recorder_from_settings
from gateway.ledger.proofs import build_proof, verify_bundle
from gateway.ledger.quarantine import REASONS, count_quarantined, list_quarantined
from gateway.ledger.query import RecordFilter, iter_records, list_records
from gateway.ledger.reports import (
    agent_report,
    agents_in_log,
    no_subject_records,
    shine_the_light_report,
    subject_known,
    subject_report,
    unknown_agent,
)
from gateway.ledger.retention import PruneResult, due_by_retention, prune, prune_by_retention
from gateway.ledger.store import LedgerStore
from gateway.ledger.verify import VerifyReport, verify_log
from gateway.manual import KINDS, LEGAL_BASES, SUBJECT_TYPES
from gateway.manual import ROLES as MANUAL_ROLES
from gateway.policy import load_policy
from gateway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class _When(click.ParamType):
    """A date (YYYY-MM-DD) or ISO date-time; naive values are UTC."""

    name = "DATE"

    def __init__(self, end_of_day: bool = False) -> None:
        self.end_of_day = end_of_day

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            if len(value) == 10:
                d = date.fromisoformat(value)
                when = datetime(d.year, d.month, d.day, tzinfo=UTC)
                # --until 2025-01-31 means "through that day".
                return when + timedelta(days=1) if self.end_of_day else when
            when = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD) or ISO date-time", param, ctx)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def _ledger_options(f: F) -> F:
    return db_option(keys_dir_option(f))


def _format_option(choices: tuple[str, ...] = render.FORMATS) -> Callable[[F], F]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(choices),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


_out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to FILE instead of the terminal.",
)


def _filters(f: F) -> F:
    opts = [
        click.option(
            "--subject", metavar="CUSTOMER_ID", help="One customer (needs the pseudonym key)."
        ),
        click.option("--subject-ref", metavar="REF", help="One subject by its log reference."),
        click.option("--agent", help="Recipient agent name."),
        click.option("--category", help="Data category; matches its descendants too."),
        click.option("--purpose", help="Data use (purpose); matches its descendants too."),
        click.option("--outcome", type=click.Choice(["disclosed", "withheld", "erasure_notice"])),
        click.option("--event-type", help="Event type, e.g. order.placed."),
        click.option("--since", type=_When(), help="Recorded on or after DATE."),
        click.option(
            "--until",
            type=_When(end_of_day=True),
            help="Recorded before DATE (a plain date includes that day).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _make_filter(settings: Settings, kw: dict[str, Any]) -> RecordFilter:
    ref = kw.get("subject_ref")
    customer = kw.get("subject")
    refs = () if customer is None else tuple(access.subject_refs_of(settings, customer))
    return RecordFilter(
        subject_ref=ref,
        subject_refs=refs,
        agent=kw.get("agent"),
        category=kw.get("category"),
        purpose=kw.get("purpose"),
        outcome=kw.get("outcome"),
        event_type=kw.get("event_type"),
        since=kw.get("since"),
        until=kw.get("until"),
    )


def _check_subject(
    store: LedgerStore, settings: Settings, refs: Sequence[str], *, customer_id: bool
) -> None:
    """A LedgerError if no record names the subject (under any of ``refs``, its references
    in every pseudonym period): a typo, most likely."""
    if any(subject_known(store, ref) for ref in refs):
        return
    shown = ", ".join(refs)
    if customer_id:
        raise LedgerError(
            no_subject_records()
            + f" (looked up with {settings.pseudonym_key_path}: subject reference(s) {shown});"
            " see which subjects the log holds with `gateway log list --format csv`"
        )
    raise LedgerError(
        no_subject_records(f"subject reference ({shown})")
        + "; see which subjects the log holds with `gateway log list --format csv`"
    )


def _check_agent(store: LedgerStore, settings: Settings, agent: str) -> None:
    """A LedgerError if neither the log nor the policy (when its file is there) names
    ``agent``."""
    known = agents_in_log(store)
    if agent in known:
        return
    declared: list[str] = []
    if settings.policy_path.exists():
        # An invalid policy is `gateway policy check`'s business, not this command's.
        with suppress(ConfigError):
            declared = list(load_policy(settings.policy_path).agents)
    if agent not in declared:
        raise LedgerError(unknown_agent(agent, [*known, *declared]) + " (names are exact)")


def _check_names(
    store: LedgerStore, settings: Settings, flt: RecordFilter, kw: dict[str, Any]
) -> None:
    """The filter's subject and agent, checked as ``_check_subject`` and ``_check_agent``."""
    refs = flt.subject_refs or ((flt.subject_ref,) if flt.subject_ref is not None else ())
    if refs:
        _check_subject(store, settings, refs, customer_id=kw.get("subject") is not None)
    if flt.agent is not None:
        _check_agent(store, settings, flt.agent)


def _emit(doc: render.Document, fmt: str, data: Any, out: Path | None) -> None:
    if out is None:
        text = render.render(doc, fmt, data, FittedConsole(highlight=False))
        if text:
            click.echo(text, nl=False)
        return
    with out.open("w", encoding="utf-8", newline="") as fh:
        if fmt == "table":
            render.print_table(doc, Console(file=fh, width=160, highlight=False))
        else:
            fh.write(render.render(doc, fmt, data))
    click.echo(f"wrote {out}", err=True)


@click.group("log", cls=GatewayGroup)
def log() -> None:
    """Review, report on and verify the disclosure log."""


@log.command("list")
@_ledger_options
@_filters
@_format_option()
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@_out_option
def list_cmd(
    db: str | None,
    keys_dir: Path | None,
    fmt: str,
    limit: int,
    offset: int,
    out: Path | None,
    **kw: Any,
) -> None:
    """List records (oldest first) matching the filters."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    flt = _make_filter(settings, kw)
    with access.open_ledger(settings) as store:
        _check_names(store, settings, flt, kw)
        records = list_records(store, flt, limit=limit, offset=offset)
    _emit(render.records_document(records), fmt, render.records_json(records), out)


@log.command("export")
@_ledger_options
@_filters
@_format_option(("jsonl", "json", "csv", "html"))
@_out_option
def export_cmd(
    db: str | None, keys_dir: Path | None, fmt: str, out: Path | None, **kw: Any
) -> None:
    """Export every matching record (no limit); jsonl streams with flat memory."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    flt = _make_filter(settings, kw)
    with access.open_ledger(settings) as store:
        _check_names(store, settings, flt, kw)
        if fmt == "jsonl":
            fh = out.open("wb") if out else sys.stdout.buffer
            try:
                for rec in iter_records(store, flt):
                    fh.write(rec.to_json() + b"\n")
            finally:
                if out:
                    fh.close()
            return
        records = list(iter_records(store, flt))
    _emit(render.records_document(records), fmt, render.records_json(records), out)


@log.command("show")
@click.argument("record_id")
@_ledger_options
@_format_option(("table", "json"))
def show_cmd(record_id: str, db: str | None, keys_dir: Path | None, fmt: str) -> None:
    """Show one record, where it sits in the log and which checkpoint covers it."""
    with access.open_ledger(settings_from(keys_dir=keys_dir, db=db)) as store:
        found = locate_record(store, record_id)
    if found is None:
        raise LedgerError(f"no record {record_id}; find ids with `gateway log list`")
    _emit(found.document(), fmt, found.to_json(), None)


@log.command("verify")
@_ledger_options
@_format_option(("table", "json"))
@click.option(
    "--against",
    "against_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A log checkpoint saved earlier (`gateway log checkpoint --out`): the log must"
    " still extend it, shard by shard.",
)
@click.option(
    "--key",
    "key_paths",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    multiple=True,
    help="A gateway public key to trust (repeatable) [default: KEYS_DIR/gateway-signing.pub];"
    " keys handed over from or to it are trusted too.",
)
@witness_key_options[0]
@witness_key_options[1]
def verify_cmd(
    db: str | None,
    keys_dir: Path | None,
    fmt: str,
    against_path: Path | None,
    key_paths: tuple[Path, ...],
    witness_key: tuple[str, ...],
    witnesses: Path | None,
) -> None:
    """Check the whole log against its signed checkpoints; exit 1 naming the first bad
    record if anything was changed, deleted, moved or inserted, or if the log no longer
    extends the saved checkpoint (--against) or what witnesses cosigned."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    keys = (
        [keystore.load_verify_key(p) for p in key_paths]
        if key_paths
        else [access.verify_key(settings)]
    )
    against = None if against_path is None else read_checkpoint(against_path)
    wkeys = witness_keys(witness_key, witnesses)
    with access.open_ledger(settings, signing="if_present") as store:
        report = verify_log(store, keys, against=against, witness_keys=wkeys)
    if fmt == "json":
        click.echo(render.to_json(report.to_dict()), nl=False)
    else:
        render.print_table(_verify_document(report), FittedConsole(highlight=False))
    if not report.ok:
        sys.exit(1)


def _verify_document(report: VerifyReport) -> render.Document:
    cols = ["shard", "records", "checkpoints", "covered", "pruned", "root"]
    rows = [
        [
            str(s.shard),
            str(s.size),
            str(s.checkpoints),
            str(s.covered),
            str(s.pruned),
            s.root.hex()[:16],
        ]
        for s in report.shards
    ]
    cp = report.log_checkpoint
    facts = [
        ("result", "OK" if report.ok else "FAILED"),
        (
            "exact positions",
            "yes (signing key)"
            if report.sealed
            else "no: public key only, damage is bounded by checkpoints",
        ),
        (
            "log checkpoint",
            "none"
            if cp is None
            else f"{cp.origin}, size {cp.size}, {cp.time}, signed by {report.log_checkpoint_key}",
        ),
    ]
    if report.against is not None:
        facts.append(
            (
                "against saved checkpoint",
                f"size {report.against.size} ({report.against.time}):"
                f" {'extended' if report.ok else 'see problems'}",
            )
        )
    if report.uncovered:
        facts.append(("records without a checkpoint", str(report.uncovered)))
    if report.unsealed:
        facts.append(("sealed under an earlier key", f"{report.unsealed} (seal not checked)"))
    if report.first is not None:
        facts.append(("first bad", report.first.message))
    doc = render.Document(
        "Disclosure log verification", facts, [render.Section("Shards", cols, rows)]
    )
    if len(report.keys) > 1:
        doc.sections.append(
            render.Section(
                "Gateway keys",
                ["key", "trusted"],
                [[k["key_id"], k["trusted"]] for k in report.keys],
            )
        )
    if report.witnesses:
        doc.sections.append(
            render.Section(
                "Witnesses",
                ["witness", "key id", "cosigned up to size", "at", "cosignatures", "verified"],
                [
                    [
                        w.name,
                        w.key_id,
                        str(w.size),
                        datetime.fromtimestamp(w.time, UTC).isoformat() if w.time else "",
                        str(w.count),
                        {True: "yes", False: "NO", None: "no key given"}[w.verified],
                    ]
                    for w in report.witnesses
                ],
            )
        )
    if len(report.problems) > 1:
        doc.sections.append(
            render.Section(
                "Problems",
                ["kind", "shard", "index", "record", "message"],
                [
                    [
                        p.kind,
                        render.text(p.shard),
                        render.text(p.index),
                        render.text(p.record_id),
                        p.message,
                    ]
                    for p in report.problems
                ],
            )
        )
    return doc


@log.command("checkpoint")
@_ledger_options
@click.option("--shard", type=int, default=None, help="Only this shard's checkpoint.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the log checkpoint to FILE instead of the terminal.",
)
def checkpoint_cmd(
    db: str | None, keys_dir: Path | None, shard: int | None, out: Path | None
) -> None:
    """Export the latest log checkpoint (a C2SP signed note over every shard); with the
    signing key at hand, first sign checkpoints for records not yet covered. Keep the
    file: `gateway log verify --against FILE` later proves the log still extends it."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    with access.open_ledger(settings, signing="if_present") as store:
        if store.signer is not None:
            made = store.checkpoint(shard)
            if not made:
                click.echo("every shard is already covered by a checkpoint", err=True)
            for c in made:
                click.echo(
                    f"shard {c.shard}: size {c.tree_size} root {c.root_hash.hex()}"
                    f" signed {c.timestamp} by {c.key_id}",
                    err=True,
                )
        cp = store.latest_log_checkpoint()
    if cp is None:
        raise LedgerError(
            "the log has no log checkpoint yet: run `gateway log checkpoint` where the"
            " gateway signing key is (GATEWAY_KEYS_DIR)"
        )
    if out is None:
        click.echo(cp.to_text(), nl=False)
    else:
        out.write_text(cp.to_text(), encoding="utf-8")
        click.echo(f"wrote {out} (log checkpoint of size {cp.size}, {cp.time})", err=True)


@log.command("prove")
@click.argument("record_id")
@_ledger_options
@_out_option
def prove_cmd(record_id: str, db: str | None, keys_dir: Path | None, out: Path | None) -> None:
    """Write a self-contained inclusion proof for one record (verify it with
    `gateway log verify-proof FILE --key gateway-signing.pub`)."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    with access.open_ledger(settings, signing="if_present") as store:
        bundle = build_proof(store, record_id)
    text = render.to_json(bundle)
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


@log.command("verify-proof")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The gateway public key (PEM or ed25519:...) [default: KEYS_DIR/gateway-signing.pub].",
)
@keys_dir_option
def verify_proof_cmd(file: Path, key_path: Path | None, keys_dir: Path | None) -> None:
    """Check an inclusion proof offline, with only the gateway public key (one from
    before a key rotation too: the bundle carries the hand-overs)."""
    if key_path is None:
        key_path = settings_from(keys_dir=keys_dir).signing_public_key_path
    key = keystore.load_verify_key(key_path)
    try:
        bundle = orjson.loads(file.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise LedgerError(f"{file} is not a proof bundle (not JSON: {exc})") from exc
    try:
        res = verify_bundle(bundle, key)
    except VerificationError as exc:
        click.secho(f"INVALID: {exc}", fg="red", err=True)
        sys.exit(1)
    via = "" if res.trusted == "given" else f" ({res.trusted}, by the bundle's hand-overs)"
    click.echo(
        f"OK: record {res.record_id} is entry {res.leaf_index} of shard {res.shard},"
        f" included in the log of size {res.tree_size} signed {res.timestamp}"
        f" by {res.key_id}{via}"
    )


@log.command("prune")
@_ledger_options
@policy_option
@click.option(
    "--by-policy",
    is_flag=True,
    help="Apply the policy file's retention section: each record goes when the longest"
    " period of the categories it disclosed has passed (a withholding: the default period).",
)
@click.option(
    "--before",
    type=_When(),
    default=None,
    help="A blanket cut instead: remove bodies of all records recorded before DATE"
    " [default: now minus GATEWAY_RETENTION_DAYS].",
)
@click.option("--dry-run", is_flag=True, help="With --by-policy: say what would go, and stop.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def prune_cmd(
    db: str | None,
    keys_dir: Path | None,
    policy: Path | None,
    by_policy: bool,
    before: datetime | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Apply retention: remove record bodies whose time is up, keeping the log verifiable
    (hashes stay; a pruned record no longer names its subject)."""
    settings = settings_from(policy=policy, keys_dir=keys_dir, db=db)
    if by_policy:
        if before is not None:
            raise click.UsageError("give --by-policy or --before, not both")
        _prune_by_policy(settings, dry_run=dry_run, yes=yes)
        return
    if dry_run:
        raise click.UsageError("--dry-run goes with --by-policy")
    if before is None:
        days = settings.retention_days
        if days is None:
            raise LedgerError(
                "say how far back to prune: --by-policy (each record by the retention periods"
                " of the policy file), --before DATE, or set GATEWAY_RETENTION_DAYS"
            )
        before = datetime.now(UTC) - timedelta(days=days)
    if not yes:
        click.confirm(
            f"Remove the bodies of all records recorded before {before.isoformat()}?", abort=True
        )
    with access.open_ledger(settings, signing="required") as store:
        result = prune(store, before)
    _pruned(result)


def _prune_by_policy(settings: Settings, *, dry_run: bool, yes: bool) -> None:
    policy = load_policy(settings.policy_path)
    retention = policy.retention
    if dry_run:
        with access.open_ledger(settings) as store:
            due = due_by_retention(store, retention)
        if not due:
            click.echo("nothing is due")
        for period, n in sorted(due.items()):
            click.echo(f"{n} record bodies are past a retention period of {period}")
        return
    if not yes:
        click.confirm(
            f"Remove the bodies of all records past their retention under {policy.source}?",
            abort=True,
        )
    with access.open_ledger(settings, signing="required") as store:
        result = prune_by_retention(store, retention, rules=f"policy {policy.policy_version}")
    _pruned(result)
    for period, n in sorted(result.by_period.items()):
        click.echo(f"  {n} past a retention period of {period}")


def _pruned(result: PruneResult) -> None:
    if result.count == 0:
        click.echo("nothing to prune")
    else:
        click.echo(
            f"pruned {result.count} record bodies (prune #{result.prune_id}, signed);"
            " `gateway log verify` still checks them by hash"
        )


def _kinds_help() -> str:
    return "\n\n".join(f"{k.name} ({' or '.join(k.bases)}): {k.policy}" for k in KINDS.values())


@log.command(
    "record-disclosure",
    epilog="\b\nKinds, their legal bases and the privacy policy's words:\n\n" + _kinds_help(),
)
@click.option("--kind", required=True, type=click.Choice(list(KINDS)), help="What it was.")
@click.option(
    "--recipient",
    required=True,
    metavar="NAME",
    help="Who received it: its short name in the log (e.g. county-court); a recipient the"
    " policy or the log knows needs nothing more.",
)
@click.option("--legal-name", help="The recipient's legal name.")
@click.option("--address", help="The recipient's postal address.")
@click.option("--role", type=click.Choice(list(MANUAL_ROLES)), help="The recipient's role.")
@click.option("--contract", help="The recipient's contract or request reference.")
@click.option(
    "--customer",
    "customers",
    multiple=True,
    metavar="CUSTOMER_ID",
    help="About whom (repeatable; needs the pseudonym key).",
)
@click.option(
    "--customers-file",
    type=click.File("r", encoding="utf-8"),
    help="More customer ids, one per line.",
)
@click.option(
    "--subject-type",
    type=click.Choice(list(SUBJECT_TYPES)),
    help="The customers' type [default: as the log last recorded each].",
)
@click.option(
    "--category",
    "categories",
    multiple=True,
    required=True,
    help="A data category disclosed (repeatable), e.g. user.contact.email.",
)
@click.option("--path", "paths", multiple=True, help="A field path disclosed, if known.")
@click.option(
    "--purpose",
    "purposes",
    multiple=True,
    help="The data use (repeatable) [default: the kind's usual one].",
)
@click.option(
    "--legal-basis",
    type=click.Choice(list(LEGAL_BASES)),
    help="The legal basis relied on [default: the kind's, when it has only one].",
)
@click.option(
    "--request-ref",
    required=True,
    help="The request answered: a court order's or subpoena's number, a ticket (a"
    " reference, no personal data).",
)
@click.option("--approved-by", required=True, help="Who approved the disclosure.")
@click.option(
    "--disclosed-at", type=_When(), default=None, help="When it was disclosed [default: now]."
)
@click.option("--recorded-by", default=None, help="Who records it [default: the logged-in user].")
@_ledger_options
@policy_option
@_format_option(("table", "json"))
def record_disclosure_cmd(
    kind: str,
    recipient: str,
    legal_name: str | None,
    address: str | None,
    role: str | None,
    contract: str | None,
    customers: tuple[str, ...],
    customers_file: TextIO | None,
    subject_type: str | None,
    categories: tuple[str, ...],
    paths: tuple[str, ...],
    purposes: tuple[str, ...],
    legal_basis: str | None,
    request_ref: str,
    approved_by: str,
    disclosed_at: datetime | None,
    recorded_by: str | None,
    db: str | None,
    keys_dir: Path | None,
    policy: Path | None,
    fmt: str,
) -> None:
    """Record a disclosure made outside the stream (an answer to a court order, a debt
    collector, a merger, ...) in the log: one signed record per customer, which access,
    agent and Shine the Light reports include. Needs the signing, workers' and pseudonym
    keys and the policy file."""
    settings = settings_from(policy=policy, keys_dir=keys_dir, db=db)
    more = [] if customers_file is None else customers_file.read().splitlines()
    req = DisclosureRequest(
        kind=kind,
        recipient=recipient,
        customers=(*customers, *more),
        categories=categories,
        request_ref=request_ref,
        approved_by=approved_by,
        legal_name=legal_name,
        address=address,
        role=role,
        contract=contract,
        subject_type=subject_type,
        paths=paths,
        purposes=purposes,
        legal_basis=legal_basis,
        disclosed_at=disclosed_at,
    )
    recorder = recorder_from_settings(settings)
    try:
        records = recorder.record(req, recorded_by or getpass.getuser())
    finally:
        recorder.close()
    if fmt == "json":
        click.echo(render.to_json(render.records_json(records)), nl=False)
        return
    first = records[0]
    click.echo(
        f"recorded {len(records)} disclosure record(s) to {first.agent}"
        f" ({first.recipient.legal_name}), {first.event_type}, event {first.event_id}:"
    )
    for rec in records:
        click.echo(f"  {rec.record_id}  {rec.subject_ref}")


@log.group("report")
def report() -> None:
    """Reports: access request (subject), agent, Shine the Light."""


@report.command("subject")
@click.argument("customer_id", required=False)
@click.option("--subject-ref", metavar="REF", help="Use the log reference instead of an id.")
@_ledger_options
@_format_option()
@_out_option
def report_subject(
    customer_id: str | None,
    subject_ref: str | None,
    db: str | None,
    keys_dir: Path | None,
    fmt: str,
    out: Path | None,
) -> None:
    """Everything disclosed about one customer: the access-request answer."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    if (customer_id is None) == (subject_ref is None):
        raise click.UsageError("give a CUSTOMER_ID or --subject-ref (one of them)")
    refs = [subject_ref] if subject_ref else access.subject_refs_of(settings, str(customer_id))
    with access.open_ledger(settings) as store:
        _check_subject(store, settings, refs, customer_id=subject_ref is None)
        rep = subject_report(store, refs, _policy_if_any(settings))
    _emit(render.subject_document(rep), fmt, rep.to_dict(), out)


def _policy_if_any(settings: Any) -> Any:
    """The policy, to name an aggregate recipient's measures and windows in an access
    report; None where the log is read without it (the report then says it generally)."""
    from gateway.errors import PolicyError
    from gateway.policy import load_policy

    try:
        return load_policy(settings.policy_path)
    except PolicyError:
        return None


@report.command("agent")
@click.argument("name")
@click.option("--since", type=_When())
@click.option("--until", type=_When(end_of_day=True))
@_ledger_options
@_format_option()
@_out_option
def report_agent(
    name: str,
    since: datetime | None,
    until: datetime | None,
    db: str | None,
    keys_dir: Path | None,
    fmt: str,
    out: Path | None,
) -> None:
    """What one agent received, for which purposes, and how often."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    with access.open_ledger(settings) as store:
        _check_agent(store, settings, name)
        rep = agent_report(store, name, since=since, until=until)
    _emit(render.agent_document(rep), fmt, rep.to_dict(), out)


@report.command("shine-the-light")
@click.option("--year", type=int, default=None, help="Calendar year [default: last year].")
@_ledger_options
@_format_option()
@_out_option
def report_shine(
    year: int | None, db: str | None, keys_dir: Path | None, fmt: str, out: Path | None
) -> None:
    """Third parties that received personal information for their own direct marketing
    in a year, and the categories (California Civil Code §1798.83)."""
    with access.open_ledger(settings_from(keys_dir=keys_dir, db=db)) as store:
        rep = shine_the_light_report(store, year or datetime.now(UTC).year - 1)
    _emit(render.shine_the_light_document(rep), fmt, rep.to_dict(), out)


@log.command("quarantine")
@_ledger_options
@click.option(
    "--reason",
    "reasons",
    multiple=True,
    type=click.Choice(REASONS),
    help="Only these reasons (repeatable).",
)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_format_option(("table", "json"))
@_out_option
def quarantine_cmd(
    db: str | None,
    keys_dir: Path | None,
    reasons: tuple[str, ...],
    limit: int,
    fmt: str,
    out: Path | None,
) -> None:
    """Messages the ledger sink read from the disclosure topic and did not log, newest
    first: unsigned or bad_mac (not written by a gateway worker: only their digest and
    size are kept), malformed (not a record), unstorable (the store rejected the record;
    its body is kept). None of them is in the log. The JSON holds the kept bodies too."""
    with access.open_ledger(settings_from(keys_dir=keys_dir, db=db)) as store:
        counts = count_quarantined(store)
        entries = list_quarantined(store, reasons=reasons, limit=limit)
    total = sum(counts.values())
    doc = render.Document(
        "Quarantined messages (not in the log)",
        facts=[
            ("total", str(total)),
            *[(reason, str(counts.get(reason, 0))) for reason in REASONS],
            (
                "shown",
                f"{len(entries)} (newest first{', --limit' if total > len(entries) else ''})",
            ),
        ],
        sections=[
            render.Section(
                "Messages",
                [
                    "quarantined",
                    "reason",
                    "topic",
                    "partition",
                    "offset",
                    "record_id",
                    "bytes",
                    "sha256",
                    "error",
                ],
                [
                    [
                        render.short(e.quarantined_at.replace(tzinfo=UTC)),
                        e.reason,
                        e.topic,
                        str(e.partition),
                        str(e.offset),
                        render.text(e.record_id),
                        str(e.value_size),
                        e.value_sha256[:16],
                        e.error,
                    ]
                    for e in entries
                ],
                optional=("sha256", "topic", "bytes", "record_id"),
            )
        ],
    )
    data = {"counts": counts, "total": total, "messages": [e.to_dict() for e in entries]}
    _emit(doc, fmt, data, out)
