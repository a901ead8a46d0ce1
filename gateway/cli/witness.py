"""``gateway log`` commands that let outsiders keep the log honest: consistency proofs
between saved checkpoints, a witness that cosigns checkpoints, the cosignatures kept with
the log, and recording a signing-key hand-over.

    gateway log prove-consistency --from OLD [--to NEW] [--out FILE]
    gateway log witness init --name NAME --out DIR
    gateway log witness cosign --dir DIR --log-key PUB --checkpoint FILE [--proof FILE]
    gateway log cosignatures add FILE [--checkpoint FILE] [--witness-key VKEY]...
    gateway log record-handover FILE

A checkpoint file is a log checkpoint as ``gateway log checkpoint`` prints it (a C2SP
signed note); a witness key is a verifier key (``NAME+KEYID+BASE64``) or a file of them,
one a line, as ``witness init`` writes to ``DIR/witness.vkey``.

Exit status: 0 fine, 1 refused (the checkpoint or proof does not verify), 2 an error the
user can fix (message says how).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from gateway import keys as keystore
from gateway.cli.common import GatewayGroup, db_option, keys_dir_option, settings_from
from gateway.crypto import VerifyKey
from gateway.errors import KeyFileError, LedgerError, SignatureError, VerificationError
from gateway.ledger import access
from gateway.ledger.consistency import build_consistency_proof
from gateway.ledger.cosignatures import add_cosignatures
from gateway.ledger.keyhistory import record_handover
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.witness import WITNESS_VKEY, Witness
from gateway.signed_notes import CosignatureKey, split_handovers

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"cannot read {what} {path}: {exc}") from exc


def read_checkpoint(path: Path) -> LogCheckpoint:
    """A log checkpoint file; a malformed one is an error naming the file."""
    try:
        return LogCheckpoint.parse(read_text(path, "the checkpoint"))
    except VerificationError as exc:
        raise LedgerError(
            f"{path}: {exc}. Export one with `gateway log checkpoint --out FILE`"
        ) from exc


def _handover_notes(path: Path) -> list[str]:
    try:
        return split_handovers(read_text(path, "the hand-over"))
    except SignatureError as exc:
        raise LedgerError(f"{path}: {exc}") from exc


def witness_keys(values: tuple[str, ...], config: Path | None = None) -> list[CosignatureKey]:
    """Witness verifier keys from ``--witness-key`` values (a vkey, or a file of vkeys)
    and a ``--witnesses`` file (one vkey a line, ``#`` comments)."""
    lines: list[tuple[str, str]] = []
    for v in values:
        p = Path(v)
        if "+" not in v and p.is_file():
            lines += [(str(p), line) for line in read_text(p, "witness keys").splitlines()]
        else:
            lines.append(("--witness-key", v))
    if config is not None:
        lines += [(str(config), line) for line in read_text(config, "witness keys").splitlines()]
    keys: list[CosignatureKey] = []
    for where, line in lines:
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            keys.append(CosignatureKey.parse(line))
        except KeyFileError as exc:
            raise KeyFileError(
                f"{where}: {exc}; a witness key looks like NAME+KEYID+BASE64 (see"
                f" {WITNESS_VKEY} in the witness's directory)"
            ) from exc
    return keys


witness_key_options = [
    click.option(
        "--witness-key",
        "witness_key",
        multiple=True,
        metavar="VKEY|FILE",
        help="A witness's verifier key (NAME+KEYID+BASE64), or a file of them. Repeatable.",
    ),
    click.option(
        "--witnesses",
        type=_file,
        default=None,
        help="A file of witness verifier keys, one a line.",
    ),
]


def _write(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        click.echo(f"wrote {out}", err=True)


def _log_keys(paths: tuple[Path, ...]) -> list[VerifyKey]:
    return [keystore.load_verify_key(p) for p in paths]


@click.command("prove-consistency")
@click.option("--from", "old_path", type=_file, required=True, help="The older checkpoint.")
@click.option(
    "--to",
    "new_path",
    type=_file,
    default=None,
    help="The newer checkpoint [default: the log's latest].",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@db_option
@keys_dir_option
def prove_consistency_cmd(
    old_path: Path, new_path: Path | None, out: Path | None, db: str | None, keys_dir: Path | None
) -> None:
    """Write the proof that one log checkpoint extends an older one: an RFC 9162
    consistency proof per shard (for `gateway log witness cosign --proof`)."""
    old = read_checkpoint(old_path)
    settings = settings_from(keys_dir=keys_dir, db=db)
    with access.open_ledger(settings) as store:
        if new_path is not None:
            new = read_checkpoint(new_path)
        else:
            latest = store.latest_log_checkpoint()
            if latest is None:
                raise LedgerError("the log has no log checkpoint yet: run `gateway log checkpoint`")
            new = latest
        proof = build_consistency_proof(store, old, new)
    _write(proof.to_text(), out)


@click.group("witness", cls=GatewayGroup)
def witness() -> None:
    """Cosign the log's checkpoints as an outside witness (an agent, an auditor)."""


@witness.command("init")
@click.option("--name", required=True, help="The witness's name, e.g. auditor.example.com/w1.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("witness"),
    show_default=True,
    help="The witness directory to create.",
)
def witness_init(name: str, out: Path) -> None:
    """Make a witness: an Ed25519 key (DIR/witness.key, 0600) and its verifier key
    (DIR/witness.vkey: give it to whoever checks the cosignatures)."""
    w = Witness.init(out, name)
    click.echo(w.vkey)
    click.echo(f"witness {name} created in {out}; its verifier key is in {out / WITNESS_VKEY}")


@witness.command("cosign")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("witness"),
    show_default=True,
    help="The witness directory (from `witness init`).",
)
@click.option(
    "--log-key",
    "log_key",
    type=_file,
    multiple=True,
    required=True,
    help="The gateway's public key (gateway-signing.pub) the log signs with. Repeatable.",
)
@click.option("--checkpoint", "checkpoint_path", type=_file, required=True)
@click.option(
    "--proof",
    "proof_path",
    type=_file,
    default=None,
    help="Consistency proof from the checkpoint this witness last cosigned"
    " (`gateway log prove-consistency`).",
)
@click.option(
    "--handover",
    type=_file,
    multiple=True,
    help="A signing-key hand-over note or chain (KEYS_DIR/history/signing/handover-chain),"
    " to trust the keys the log rotated to. Repeatable.",
)
def witness_cosign(
    directory: Path,
    log_key: tuple[Path, ...],
    checkpoint_path: Path,
    proof_path: Path | None,
    handover: tuple[Path, ...],
) -> None:
    """Check a log checkpoint (signature, and consistency with the last one this witness
    cosigned) and print the cosignature line; exit 1 if it is refused."""
    w = Witness.open(directory)
    text = read_text(checkpoint_path, "the checkpoint")
    proof = None if proof_path is None else read_text(proof_path, "the proof")
    notes = [n for p in handover for n in _handover_notes(p)]
    try:
        done = w.cosign(text, _log_keys(log_key), proof, handovers=notes)
    except VerificationError as exc:
        click.secho(f"REFUSED: {exc}", fg="red", err=True)
        sys.exit(1)
    click.echo(done.line, nl=False)


@click.group("cosignatures", cls=GatewayGroup)
def cosignatures() -> None:
    """Witness cosignatures kept with the log (`gateway log verify` shows them)."""


@cosignatures.command("add")
@click.argument("file", type=_file)
@click.option(
    "--checkpoint",
    "checkpoint_path",
    type=_file,
    default=None,
    help="The checkpoint the cosignature lines in FILE are for (when FILE holds the lines alone).",
)
@witness_key_options[0]
@witness_key_options[1]
@db_option
@keys_dir_option
def cosignatures_add(
    file: Path,
    checkpoint_path: Path | None,
    witness_key: tuple[str, ...],
    witnesses: Path | None,
    db: str | None,
    keys_dir: Path | None,
) -> None:
    """Store the witness cosignatures in FILE: a checkpoint with cosignature lines
    appended, or the lines alone with --checkpoint. Cosignatures of witnesses whose key
    is given must verify."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    text = read_text(file, "the cosignatures")
    checkpoint = None if checkpoint_path is None else read_text(checkpoint_path, "the checkpoint")
    wkeys = witness_keys(witness_key, witnesses)
    with access.open_ledger(settings) as store:
        added = add_cosignatures(
            store,
            text,
            checkpoint=checkpoint,
            log_keys=[access.verify_key(settings)],
            witness_keys=wkeys,
        )
    if not added:
        click.echo("no new cosignatures (already stored, or none in the file)")
    for c in added:
        state = "verified" if c.verified else "not verified (no key given for this witness)"
        click.echo(
            f"stored: witness {c.witness} cosigned size {c.tree_size} at {c.cosigned_at}, {state}"
        )


@click.command("record-handover")
@click.argument("file", type=_file)
@db_option
@keys_dir_option
def record_handover_cmd(file: Path, db: str | None, keys_dir: Path | None) -> None:
    """Record a signing-key hand-over note (signed by the old key and the new one) in the
    log, so checkpoints of both keys verify with either public key."""
    settings = settings_from(keys_dir=keys_dir, db=db)
    with access.open_ledger(settings) as store:
        h = record_handover(store, read_text(file, "the hand-over"))
    click.echo(f"recorded: gateway key {h.old.key_id} handed over to {h.new.key_id} at {h.time}")


def register(log: click.Group) -> None:
    """Add these commands to the ``gateway log`` group."""
    log.add_command(prove_consistency_cmd)
    log.add_command(witness)
    log.add_command(cosignatures)
    log.add_command(record_handover_cmd)
