"""``gateway log`` through click's CliRunner, on a ledger built from realistic records."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import sqlalchemy as sa
from click.testing import CliRunner

from gateway.cli import main
from gateway.cli.log import log
from gateway.keys import init_gateway_keys, load_signing_key
from gateway.ledger.store import open_store
from gateway.records import DecisionRecord
from gateway.rotation import load_pseudonym_keyring
from gateway.settings import Settings
from gateway.web.auth import Credentials
from gateway.web.config import config_from_settings
from tests.cli.helpers import Env
from tests.ledger.data import make_record, ref


def test_list_filters_and_formats(env: Env) -> None:
    res = env.run("list", "--subject", "B-2001", "--format", "json", "--limit", "1000")
    assert res.exit_code == 0, res.output
    got = [r["record_id"] for r in orjson.loads(res.output)]
    assert got == [r.record_id for r in env.records if r.subject_ref == ref("B-2001")]

    res = env.run("list", "--agent", "reseller", "--outcome", "disclosed", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert rows and {r["agent"] for r in rows} == {"reseller"}

    res = env.run(
        "list",
        "--category",
        "user.contact",
        "--purpose",
        "marketing",
        "--since",
        "2024-01-01",
        "--until",
        "2024-12-31",
        "--format",
        "json",
        "--limit",
        "1000",
    )
    ids = {r["record_id"] for r in orjson.loads(res.output)}
    assert ids == {
        r.record_id
        for r in env.records
        if r.outcome == "disclosed" and any(p.startswith("marketing") for p in r.purposes)
    }

    res = env.run("list", "--limit", "3")
    assert res.exit_code == 0 and env.records[0].record_id in res.output

    res = env.run("list", "--format", "html", "--limit", "5")
    assert res.output.startswith("<!doctype html>")


def test_list_rejects_a_bad_date(env: Env) -> None:
    res = CliRunner().invoke(log, ["list", "--since", "yesterday", "--db", env.url])
    assert res.exit_code == 2 and "not a date" in res.output


def test_show(env: Env) -> None:
    rec = env.records[55]
    res = env.run("show", rec.record_id, "--format", "json")
    data = orjson.loads(res.output)
    assert DecisionRecord.model_validate(data["record"]) == rec
    assert (data["shard"], data["index"]) == (1, 5)
    res = env.run("show", rec.record_id)
    assert res.exit_code == 0 and rec.agent in res.output and "shard" in res.output
    res = env.run("show", "no-such-record")
    assert res.exit_code == 2 and "gateway log list" in res.output


def test_verify_ok_then_tampered(env: Env) -> None:
    res = env.run("verify")
    assert res.exit_code == 0 and "OK" in res.output
    target = env.records[12]
    eng = sa.create_engine(env.url)
    with eng.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ledger_records SET body = replace(body, 'contract',"
                " 'consent') WHERE record_id = :r"
            ),
            {"r": target.record_id},
        )
    eng.dispose()
    res = env.run("verify", "--format", "json")
    assert res.exit_code == 1
    first = orjson.loads(res.output)["first"]
    assert (first["record_id"], first["index"], first["kind"]) == (target.record_id, 12, "edited")
    res = env.run("verify")
    assert res.exit_code == 1 and target.record_id in res.output and "FAILED" in res.output


def test_verify_with_public_key_only(env: Env) -> None:
    os.remove(env.keys / "gateway-signing.key")
    res = env.run("verify")
    assert res.exit_code == 0 and "public key only" in res.output


def test_checkpoint_prove_and_verify_proof(env: Env) -> None:
    res = env.run("checkpoint")
    assert res.exit_code == 0 and "shard 0: size 50" in res.output
    assert "already covered" in env.run("checkpoint").output
    rec = env.records[77]
    proof = env.tmp / "proof.json"
    res = env.run("prove", rec.record_id, "--out", str(proof))
    assert res.exit_code == 0 and proof.exists()
    pub = env.keys / "gateway-signing.pub"
    res = CliRunner().invoke(log, ["verify-proof", str(proof), "--key", str(pub)])
    assert res.exit_code == 0 and f"OK: record {rec.record_id}" in res.output
    bundle = orjson.loads(proof.read_bytes())
    bundle["record"]["agent"] = "someone-else"
    bad = env.tmp / "bad.json"
    bad.write_bytes(orjson.dumps(bundle))
    res = CliRunner().invoke(log, ["verify-proof", str(bad), "--key", str(pub)])
    assert res.exit_code == 1 and "INVALID" in res.output
    other = env.tmp / "other-keys"
    init_gateway_keys(other)
    res = CliRunner().invoke(
        log, ["verify-proof", str(proof), "--key", str(other / "gateway-signing.pub")]
    )
    assert res.exit_code == 1 and "not signed" in res.output


def test_reports(env: Env) -> None:
    res = env.run("report", "subject", "C-1004", "--format", "json")
    data = orjson.loads(res.output)
    assert data["subject_ref"] == ref("C-1004")
    assert data["records"] == sum(r.subject_ref == ref("C-1004") for r in env.records)
    res = env.run("report", "subject", "C-1004")
    assert res.exit_code == 0 and "Recipients" in res.output

    out = env.tmp / "agent.html"
    res = env.run("report", "agent", "email", "--format", "html", "--out", str(out))
    assert res.exit_code == 0 and "MailRelay &lt;Services&gt;" in out.read_text()

    res = env.run("report", "shine-the-light", "--year", "2024", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(res.output)))
    assert [r["agent"] for r in rows] == ["reseller"]
    assert rows[0]["consumer_subjects"] == "0"
    res = env.run("report", "shine-the-light", "--year", "2024")
    assert res.exit_code == 0 and "Lens Partners" in res.output


def test_export_jsonl(env: Env) -> None:
    out = env.tmp / "all.jsonl"
    res = env.run("export", "--out", str(out))
    assert res.exit_code == 0
    lines = out.read_bytes().splitlines()
    assert [DecisionRecord.from_json(x).record_id for x in lines] == [
        r.record_id for r in env.records
    ]


def test_prune_then_verify(env: Env) -> None:
    res = env.run("prune", "--before", "2024-01-10", input="n\n")
    assert res.exit_code == 1  # declined
    res = env.run("prune", "--before", "2024-01-10", "--yes")
    assert res.exit_code == 0 and "pruned" in res.output
    assert env.run("verify").exit_code == 0
    res = env.run("list", "--until", "2024-01-09", "--format", "json")
    assert orjson.loads(res.output) == []
    res = env.run("prune", "--yes")
    assert res.exit_code == 2 and "GATEWAY_RETENTION_DAYS" in res.output


def test_missing_ledger_says_what_to_do(tmp_path: Path) -> None:
    res = CliRunner().invoke(log, ["list", "--db", f"sqlite:///{tmp_path}/none.db"])
    assert res.exit_code == 2
    assert "gateway demo" in res.output and "--ledger" in res.output


def test_subject_needs_the_pseudonym_key(env: Env, tmp_path: Path) -> None:
    res = CliRunner().invoke(
        log, ["list", "--subject", "C-1001", "--db", env.url, "--keys-dir", str(tmp_path / "empty")]
    )
    assert res.exit_code == 2 and "gateway keys init" in res.output


def test_cli_on_postgres(pg_env: Env) -> None:
    res = pg_env.run("verify")
    assert res.exit_code == 0, res.output
    res = pg_env.run("report", "subject", "B-2002", "--format", "json")
    assert orjson.loads(res.output)["records"] == sum(
        r.subject_ref == ref("B-2002") for r in pg_env.records
    )
    proof = pg_env.tmp / "p.json"
    assert pg_env.run("prove", pg_env.records[3].record_id, "--out", str(proof)).exit_code == 0
    res = CliRunner().invoke(log, ["verify-proof", str(proof), "--keys-dir", str(pg_env.keys)])
    assert res.exit_code == 0, res.output


def test_verify_checks_against_the_published_public_key(env: Env) -> None:
    # The same key order as the review page: the published key is what agents and auditors
    # check against, so a log signed by another key must not pass here either.
    assert env.run("checkpoint").exit_code == 0
    other = init_gateway_keys(env.tmp / "other-keys").paths.signing_pub
    (env.keys / "gateway-signing.pub").write_bytes(other.read_bytes())
    res = env.run("verify", "--format", "json")
    assert res.exit_code == 1, res.output
    os.remove(env.keys / "gateway-signing.pub")  # missing: the signing key's half stands in
    assert env.run("verify").exit_code == 0


def test_a_subjects_history_is_found_across_a_pseudonym_rotation(env: Env) -> None:
    customer = "C-1001"
    before = [r for r in env.records if r.subject_ref == ref(customer)]
    assert before
    res = CliRunner().invoke(main, ["keys", "rotate", "pseudonym", "--dir", str(env.keys)])
    assert res.exit_code == 0, res.output
    ring = load_pseudonym_keyring(env.keys)
    new_ref = ring.subject_ref(customer)
    assert new_ref != ref(customer)
    # What the workers record about the same customer in the new period.
    when = datetime(2025, 6, 1, tzinfo=UTC)
    after = [
        make_record(agent, customer, when, seq=9000 + n).model_copy(update={"subject_ref": new_ref})
        for n, agent in enumerate(("shipping", "payments", "email"))
    ]
    assert after and not {r.record_id for r in after} & {r.record_id for r in before}
    with open_store(env.url, signer=load_signing_key(env.keys / "gateway-signing.key")) as s:
        s.append(after, shard=3)

    res = env.run("report", "subject", customer, "--format", "json")
    assert res.exit_code == 0, res.output
    rep = orjson.loads(res.output)
    assert rep["records"] == len(before) + len(after)
    assert rep["subject_ref"] == new_ref and rep["subject_refs"] == [new_ref, ref(customer)]
    res = env.run("list", "--subject", customer, "--format", "json", "--limit", "1000")
    listed = {r["record_id"] for r in orjson.loads(res.output)}
    assert listed == {r.record_id for r in before + after}
    # One period's reference alone finds that period's records only.
    res = env.run("report", "subject", "--subject-ref", ref(customer), "--format", "json")
    assert orjson.loads(res.output)["records"] == len(before)

    # The review page looks a customer up the same way.
    settings = Settings(ledger_url=env.url, keys_dir=env.keys)
    config = config_from_settings(settings, Credentials.parse("reviewer", "a-long-password-1"))
    try:
        assert config.subject_refs(customer) == [new_ref, ref(customer)]
        assert config.subject_ref(customer) == new_ref
    finally:
        config.store.close()
