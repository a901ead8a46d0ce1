"""``gateway log``: review and verify the disclosure log.

The store URL and keys come from ``Settings`` (GATEWAY_LEDGER_URL, GATEWAY_KEYS_DIR) unless
``--db`` / ``--keys-dir`` are given. Reading needs no key except for ``--subject`` (the
pseudonym key turns a customer id into the log's subject reference). ``verify`` uses the
signing key when present, to name the exact bad record; with only the public key it still
detects tampering up to the last checkpoint.

Exit status: 0 fine, 1 verification failed, 2 an error the user can fix (message says how).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console

from gateway import keys as keystore
from gateway.cli.common import GatewayGroup
from gateway.crypto import SigningKey, VerifyKey, subject_ref
from gateway.errors import LedgerError, VerificationError
from gateway.ledger import render
from gateway.ledger.proofs import build_proof, verify_bundle
from gateway.ledger.query import RecordFilter, iter_records, list_records
from gateway.ledger.reports import agent_report, shine_the_light_report, subject_report
from gateway.ledger.retention import prune
from gateway.ledger.store import LedgerStore, open_store
from gateway.ledger.verify import verify_log
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


class _Env:
    def __init__(self, db: str | None, keys_dir: Path | None) -> None:
        overrides: dict[str, Any] = {}
        if db:
            overrides["ledger_url"] = db
        if keys_dir is not None:
            overrides["keys_dir"] = keys_dir
        self.settings = Settings(**overrides)

    def signer(self, required: bool = False) -> SigningKey | None:
        path = self.settings.signing_key_path
        if not required and not Path(path).exists():
            return None
        return keystore.load_signing_key(path)

    def verify_key(self) -> VerifyKey:
        signer = self.signer()
        if signer is not None:
            return signer.public_key()
        return keystore.load_verify_key(self.settings.signing_public_key_path)

    def store(self, signer: SigningKey | None = None) -> LedgerStore:
        return open_store(
            self.settings.ledger_url,
            signer=signer,
            create=False,
            checkpoint_every=self.settings.checkpoint_every,
        )

    def subject_ref(self, customer_id: str) -> str:
        return subject_ref(
            keystore.load_pseudonym_key(self.settings.pseudonym_key_path), customer_id
        )


def _common(f: F) -> F:
    f = click.option(
        "--keys-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Key directory [env GATEWAY_KEYS_DIR].",
    )(f)
    return click.option(
        "--db",
        default=None,
        metavar="URL",
        help="Ledger URL, e.g. sqlite:///FILE or postgresql+psycopg://user@host/db"
        " [env GATEWAY_LEDGER_URL, default sqlite:///.gateway/ledger.db].",
    )(f)


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


def _make_filter(env: _Env, kw: dict[str, Any]) -> RecordFilter:
    ref = kw.pop("subject_ref", None)
    customer = kw.pop("subject", None)
    if customer is not None:
        ref = env.subject_ref(customer)
    return RecordFilter(
        subject_ref=ref,
        agent=kw.get("agent"),
        category=kw.get("category"),
        purpose=kw.get("purpose"),
        outcome=kw.get("outcome"),
        event_type=kw.get("event_type"),
        since=kw.get("since"),
        until=kw.get("until"),
    )


def _emit(doc: render.Document, fmt: str, data: Any, out: Path | None) -> None:
    if out is None:
        text = render.render(doc, fmt, data, Console(highlight=False))
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
@_common
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
    env = _Env(db, keys_dir)
    flt = _make_filter(env, kw)
    with env.store() as store:
        records = list_records(store, flt, limit=limit, offset=offset)
    _emit(render.records_document(records), fmt, render.records_json(records), out)


@log.command("export")
@_common
@_filters
@_format_option(("jsonl", "json", "csv", "html"))
@_out_option
def export_cmd(
    db: str | None, keys_dir: Path | None, fmt: str, out: Path | None, **kw: Any
) -> None:
    """Export every matching record (no limit); jsonl streams with flat memory."""
    env = _Env(db, keys_dir)
    flt = _make_filter(env, kw)
    with env.store() as store:
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
@_common
@_format_option(("table", "json"))
def show_cmd(record_id: str, db: str | None, keys_dir: Path | None, fmt: str) -> None:
    """Show one record, where it sits in the log and which checkpoint covers it."""
    env = _Env(db, keys_dir)
    with env.store() as store:
        stored = store.get(record_id)
        if stored is None:
            raise LedgerError(f"no record {record_id}; find ids with `gateway log list`")
        cp = store.covering_checkpoint(stored.shard, stored.seq)
    location = {
        "shard": stored.shard,
        "index": stored.seq,
        "leaf_hash": stored.leaf_hash.hex(),
        "checkpoint": f"size {cp.tree_size} at {cp.timestamp}" if cp else None,
    }
    rec = stored.record
    if rec is None:
        location["pruned"] = f"body removed by retention (prune #{stored.pruned_by})"
        data: dict[str, Any] = {"record_id": record_id, **location}
        doc = render.Document(
            f"Record {record_id} (pruned)", [(k, render.text(v)) for k, v in location.items()]
        )
    else:
        data = {"record": rec.model_dump(mode="json"), **location}
        doc = render.record_document(rec, location)
    _emit(doc, fmt, data, None)


@log.command("verify")
@_common
@_format_option(("table", "json"))
def verify_cmd(db: str | None, keys_dir: Path | None, fmt: str) -> None:
    """Check the whole log against its signed checkpoints; exit 1 naming the first bad
    record if anything was changed, deleted, moved or inserted."""
    env = _Env(db, keys_dir)
    signer = env.signer()
    with env.store(signer) as store:
        report = verify_log(store, env.verify_key())
    if fmt == "json":
        click.echo(render.to_json(report.to_dict()), nl=False)
    else:
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
        facts = [
            ("result", "OK" if report.ok else "FAILED"),
            (
                "exact positions",
                "yes (signing key)"
                if report.sealed
                else "no: public key only, damage is bounded by checkpoints",
            ),
        ]
        if report.first is not None:
            facts.append(("first bad", report.first.message))
        doc = render.Document(
            "Disclosure log verification", facts, [render.Section("Shards", cols, rows)]
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
        render.print_table(doc, Console(highlight=False))
    if not report.ok:
        sys.exit(1)


@log.command("checkpoint")
@_common
@click.option("--shard", type=int, default=None, help="Only this shard.")
def checkpoint_cmd(db: str | None, keys_dir: Path | None, shard: int | None) -> None:
    """Sign a checkpoint now for every shard with records since its last one."""
    env = _Env(db, keys_dir)
    with env.store(env.signer(required=True)) as store:
        made = store.checkpoint(shard)
    if not made:
        click.echo("every shard is already covered by a checkpoint")
    for cp in made:
        click.echo(
            f"shard {cp.shard}: size {cp.tree_size} root {cp.root_hash.hex()}"
            f" signed {cp.timestamp} by {cp.key_id}"
        )


@log.command("prove")
@click.argument("record_id")
@_common
@_out_option
def prove_cmd(record_id: str, db: str | None, keys_dir: Path | None, out: Path | None) -> None:
    """Write a self-contained inclusion proof for one record (verify it with
    `gateway log verify-proof FILE --key gateway-signing.pub`)."""
    env = _Env(db, keys_dir)
    with env.store(env.signer()) as store:
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
@click.option("--keys-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def verify_proof_cmd(file: Path, key_path: Path | None, keys_dir: Path | None) -> None:
    """Check an inclusion proof offline, with only the gateway public key."""
    if key_path is None:
        key_path = _Env(None, keys_dir).settings.signing_public_key_path
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
    click.echo(
        f"OK: record {res.record_id} is entry {res.leaf_index} of shard {res.shard},"
        f" included in the log of size {res.tree_size} signed {res.timestamp}"
        f" by {res.key_id}"
    )


@log.command("prune")
@_common
@click.option(
    "--before",
    type=_When(),
    default=None,
    help="Remove bodies of records recorded before DATE [default: now minus"
    " GATEWAY_RETENTION_DAYS].",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def prune_cmd(db: str | None, keys_dir: Path | None, before: datetime | None, yes: bool) -> None:
    """Apply retention: remove old record bodies, keeping the log verifiable."""
    env = _Env(db, keys_dir)
    if before is None:
        days = env.settings.retention_days
        if days is None:
            raise LedgerError(
                "say how far back to prune: --before DATE, or set GATEWAY_RETENTION_DAYS"
            )
        before = datetime.now(UTC) - timedelta(days=days)
    if not yes:
        click.confirm(
            f"Remove the bodies of all records recorded before {before.isoformat()}?", abort=True
        )
    with env.store(env.signer(required=True)) as store:
        result = prune(store, before)
    if result.count == 0:
        click.echo("nothing to prune")
    else:
        click.echo(
            f"pruned {result.count} record bodies (prune #{result.prune_id}, signed);"
            " `gateway log verify` still checks them by hash"
        )


@log.group("report")
def report() -> None:
    """Reports: access request (subject), agent, Shine the Light."""


@report.command("subject")
@click.argument("customer_id", required=False)
@click.option("--subject-ref", metavar="REF", help="Use the log reference instead of an id.")
@_common
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
    env = _Env(db, keys_dir)
    if (customer_id is None) == (subject_ref is None):
        raise click.UsageError("give a CUSTOMER_ID or --subject-ref (one of them)")
    ref = subject_ref or env.subject_ref(str(customer_id))
    with env.store() as store:
        rep = subject_report(store, ref)
    _emit(render.subject_document(rep), fmt, rep.to_dict(), out)


@report.command("agent")
@click.argument("name")
@click.option("--since", type=_When())
@click.option("--until", type=_When(end_of_day=True))
@_common
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
    env = _Env(db, keys_dir)
    with env.store() as store:
        rep = agent_report(store, name, since=since, until=until)
    _emit(render.agent_document(rep), fmt, rep.to_dict(), out)


@report.command("shine-the-light")
@click.option("--year", type=int, default=None, help="Calendar year [default: last year].")
@_common
@_format_option()
@_out_option
def report_shine(
    year: int | None, db: str | None, keys_dir: Path | None, fmt: str, out: Path | None
) -> None:
    """Third parties that received personal information for their own direct marketing
    in a year, and the categories (California Civil Code §1798.83)."""
    env = _Env(db, keys_dir)
    with env.store() as store:
        rep = shine_the_light_report(store, year or datetime.now(UTC).year - 1)
    _emit(render.shine_the_light_document(rep), fmt, rep.to_dict(), out)
