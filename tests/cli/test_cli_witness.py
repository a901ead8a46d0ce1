"""`gateway log checkpoint`, `verify --against`, `prove-consistency`, `witness` and
`cosignatures`, and `record-handover`, as an auditor and an agent would run them: with
the gateway's public key only."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import orjson
import sqlalchemy as sa
from click.testing import CliRunner, Result

from gateway.cli import main
from gateway.cli.log import log
from gateway.crypto import SigningKey
from gateway.keys import load_signing_key, load_verify_key
from gateway.ledger import access
from gateway.ledger.logcheckpoint import LogCheckpoint
from gateway.ledger.store import open_store
from gateway.settings import Settings
from gateway.signed_notes import make_handover
from tests.cli.helpers import Env
from tests.ledger import attacks
from tests.ledger.data import make_records


def run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "240"}).invoke(log, list(args), catch_exceptions=False)


def auditor_keys(env: Env) -> Path:
    """What an auditor holds: the published public key only."""
    d = env.tmp / "auditor-keys"
    if not d.exists():
        d.mkdir()
        shutil.copy(env.keys / "gateway-signing.pub", d / "gateway-signing.pub")
    return d


def verify(env: Env, *args: str) -> Result:
    return run("verify", "--db", env.url, "--keys-dir", str(auditor_keys(env)), *args)


def grow(env: Env, n: int = 20, seed: int = 77) -> None:
    with open_store(env.url, signer=load_signing_key(env.keys / "gateway-signing.key")) as s:
        s.append(make_records(n, seed=seed)[:n], shard=0)


def test_checkpoint_exports_a_signed_note_and_verify_against_it(env: Env) -> None:
    saved = env.tmp / "saved.checkpoint"
    res = env.run("checkpoint", "--out", str(saved))
    assert res.exit_code == 0, res.output
    cp = LogCheckpoint.parse(saved.read_text())
    assert cp.origin == "disclosure-gateway.local/log" and cp.size == len(env.records)
    # With the public key only, it exports the latest as is (to stdout by default).
    res = run("checkpoint", "--db", env.url, "--keys-dir", str(auditor_keys(env)))
    assert res.exit_code == 0 and res.stdout == saved.read_text()

    attacks.copy_sqlite(env.url, env.tmp / "backup.db")
    grow(env)
    res = verify(env, "--against", str(saved))
    assert res.exit_code == 0, res.output
    assert "against saved checkpoint" in res.output and "extended" in res.output

    later = env.tmp / "later.checkpoint"
    assert env.run("checkpoint", "--out", str(later)).exit_code == 0
    attacks.restore_sqlite(env.url, env.tmp / "backup.db")
    assert verify(env).exit_code == 0  # the restored copy is consistent in itself
    res = verify(env, "--against", str(later), "--format", "json")
    assert res.exit_code == 1
    first = orjson.loads(res.stdout)["first"]
    assert first["kind"] == "rolled_back" and first["shard"] == 0
    assert "fewer than the 70" in first["message"]


def test_a_witness_cosigns_and_refuses_a_rollback(env: Env) -> None:
    wdir = env.tmp / "witness"
    res = run("witness", "init", "--name", "shipping.example/witness", "--out", str(wdir))
    assert res.exit_code == 0, res.output
    vkey = (wdir / "witness.vkey").read_text().strip()
    assert vkey in res.output
    pub = str(env.keys / "gateway-signing.pub")
    cp1 = env.tmp / "cp1"
    assert env.run("checkpoint", "--out", str(cp1)).exit_code == 0
    attacks.copy_sqlite(env.url, env.tmp / "backup.db")

    def cosign(checkpoint: Path, *more: str) -> Result:
        return run(
            "witness", "cosign", "--dir", str(wdir), "--log-key", pub,
            "--checkpoint", str(checkpoint), *more,
        )  # fmt: skip

    first = cosign(cp1)
    assert first.exit_code == 0 and first.stdout.startswith("\u2014 shipping.example/witness ")

    grow(env)
    cp2, proof = env.tmp / "cp2", env.tmp / "proof"
    assert env.run("checkpoint", "--out", str(cp2)).exit_code == 0
    res = cosign(cp2)
    assert res.exit_code == 1 and "consistency proof is needed" in res.output
    res = env.run("prove-consistency", "--from", str(cp1), "--to", str(cp2), "--out", str(proof))
    assert res.exit_code == 0, res.output
    assert proof.read_text().startswith("disclosure-gateway/consistency-proof/v1\n")
    second = cosign(cp2, "--proof", str(proof))
    assert second.exit_code == 0, second.output

    cosigned = env.tmp / "cp2.cosigned"
    cosigned.write_text(cp2.read_text() + second.stdout)
    res = run(
        "cosignatures", "add", str(cosigned), "--witness-key", vkey,
        "--db", env.url, "--keys-dir", str(auditor_keys(env)),
    )  # fmt: skip
    assert res.exit_code == 0 and "verified" in res.output, res.output
    lines = env.tmp / "cp1.lines"
    lines.write_text(first.stdout)
    res = run(
        "cosignatures", "add", str(lines), "--checkpoint", str(cp1),
        "--db", env.url, "--keys-dir", str(auditor_keys(env)),
    )  # fmt: skip
    assert res.exit_code == 0 and "not verified" in res.output

    res = verify(env, "--witness-key", str(wdir / "witness.vkey"), "--format", "json")
    assert res.exit_code == 0, res.output
    (w,) = orjson.loads(res.stdout)["witnesses"]
    assert (w["witness"], w["verified"], w["size"], w["count"]) == (
        "shipping.example/witness", True, len(env.records) + 20, 2,
    )  # fmt: skip
    assert "Witnesses" in verify(env, "--witness-key", vkey).output

    # The database goes back to before cp2: the witness refuses the log's new checkpoint,
    # and the cosignature kept... is gone with the rollback, but the witness's isn't.
    attacks.restore_sqlite(env.url, env.tmp / "backup.db")
    back = env.tmp / "back"
    assert env.run("checkpoint", "--out", str(back)).exit_code == 0
    res = cosign(back)
    assert res.exit_code == 1 and "REFUSED" in res.output and "rolled back" in res.output
    res = verify(
        env, "--against", str(wdir / "logs" / next(p.name for p in (wdir / "logs").iterdir()))
    )
    assert res.exit_code == 1 and "fewer than" in res.output


def test_record_handover_then_both_keys_verify(env: Env) -> None:
    old = load_signing_key(env.keys / "gateway-signing.key")
    new = SigningKey.generate()
    note = env.tmp / "handover.note"
    note.write_text(make_handover(old, new))
    res = run("record-handover", str(note), "--db", env.url, "--keys-dir", str(auditor_keys(env)))
    assert res.exit_code == 0 and f"handed over to {new.key_id}" in res.output
    with open_store(env.url, signer=new) as s:
        s.append(make_records(10, seed=5150)[:10], shard=1)
    res = verify(env)  # the auditor's old public key, through the recorded hand-over
    assert res.exit_code == 0, res.output
    assert "Gateway keys" in res.output and new.key_id in res.output
    newer = env.tmp / "new.pub"
    newer.write_bytes(new.public_key().to_pem())
    res = verify(env, "--key", str(newer))
    assert res.exit_code == 0, res.output
    bad = env.tmp / "bad.note"
    bad.write_text(note.read_text().replace("time 2", "time 1"))
    res = run("record-handover", str(bad), "--db", env.url, "--keys-dir", str(auditor_keys(env)))
    assert res.exit_code == 2 and "not a valid key hand-over" in res.output


def test_the_log_origin_setting_names_the_log(env: Env) -> None:
    # A new log is checkpointed under GATEWAY_LOG_ORIGIN...
    url = f"sqlite:///{env.tmp / 'named.db'}"
    open_store(url).close()
    named = Settings(ledger_url=url, keys_dir=env.keys, log_origin="example.com/log")
    with access.open_ledger(named, signing="required") as store:
        store.append(make_records(5, seed=77)[:5], shard=0)
        cp = store.latest_log_checkpoint()
    assert cp is not None and cp.origin == "example.com/log"
    # ...and a log keeps the origin it has: signing under another one is refused.
    runner = CliRunner(env={"GATEWAY_LOG_ORIGIN": "example.com/log"})
    res = runner.invoke(log, ["checkpoint", "--db", env.url, "--keys-dir", str(env.keys)])
    assert res.exit_code == 2
    assert "set it back to 'disclosure-gateway.local/log'" in res.output
    res = runner.invoke(log, ["checkpoint", "--db", url, "--keys-dir", str(env.keys)])
    assert res.exit_code == 0 and res.stdout.startswith("example.com/log\n")


def test_rotate_signing_records_the_handover_so_the_old_public_key_verifies(env: Env) -> None:
    auditor_keys(env)  # the auditor keeps the public key from before the rotation
    before = env.tmp / "before.checkpoint"
    assert env.run("checkpoint", "--out", str(before)).exit_code == 0
    res = CliRunner().invoke(
        main, ["keys", "rotate", "signing", "--dir", str(env.keys), "--db", env.url]
    )
    assert res.exit_code == 0, res.output
    assert f"hand-over recorded in {env.url}" in res.output
    # A sink restarted with the new key appends where the old key left off.
    new = load_signing_key(env.keys / "gateway-signing.key")
    with open_store(env.url, signer=new) as s:
        s.append(make_records(12, seed=4242)[:12], shard=0)
        s.append(make_records(6, seed=4343)[:6], shard=2)
        s.checkpoint()
    res = verify(env, "--against", str(before), "--format", "json")
    assert res.exit_code == 0, res.output
    report = orjson.loads(res.stdout)
    assert {k["key_id"] for k in report["keys"]} == {
        load_verify_key(auditor_keys(env) / "gateway-signing.pub").key_id,
        new.key_id,
    }
    assert report["problems"] == [] and report["uncovered"] == 0
    # An inclusion proof made now verifies with the old public key alone.
    proof = env.tmp / "proof.json"
    fresh = make_records(12, seed=4242)[5]
    assert env.run("prove", fresh.record_id, "--out", str(proof)).exit_code == 0
    old_pub = auditor_keys(env) / "gateway-signing.pub"
    res = run("verify-proof", str(proof), "--key", str(old_pub))
    assert res.exit_code == 0, res.output
    assert f"OK: record {fresh.record_id}" in res.output and "handed over from" in res.output

    # The recorded hand-over is made to lead to another key: verify fails.
    attacker = SigningKey.generate().public_key()
    eng = sa.create_engine(env.url)
    with eng.begin() as conn:
        note = conn.execute(sa.text("SELECT note FROM ledger_key_history")).scalar_one()
        new_line = next(line for line in note.splitlines() if line.startswith("new "))
        forged = note.replace(
            new_line, f"new {attacker.key_id} {base64.b64encode(attacker.raw).decode()}"
        )
        conn.execute(sa.text("UPDATE ledger_key_history SET note = :n"), {"n": forged})
    eng.dispose()
    res = verify(env, "--format", "json")
    assert res.exit_code == 1
    kinds = {p["kind"] for p in orjson.loads(res.stdout)["problems"]}
    assert "forged_handover" in kinds and "forged_checkpoint" in kinds


def test_rotate_signing_without_a_ledger_prints_the_command_to_record_it(env: Env) -> None:
    missing = f"sqlite:///{env.tmp / 'elsewhere.db'}"
    res = CliRunner().invoke(
        main, ["keys", "rotate", "signing", "--dir", str(env.keys), "--db", missing]
    )
    assert res.exit_code == 0, res.output
    assert "NOT recorded: no ledger at" in res.output
    note = next((env.keys / "history" / "signing").glob("*.handover"))
    command = f"gateway log record-handover {note} --db {missing}"
    assert command in res.output
    # The printed command, run against the ledger, records it.
    args = command.split()[2:]
    args[args.index("--db") + 1] = env.url
    res = run(*args)
    assert res.exit_code == 0 and "handed over to" in res.output
