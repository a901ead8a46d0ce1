"""A record and where it sits in the log: the review page and ``gateway log show`` give
the same facts, for a record with its body and for one whose body retention removed."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from click.testing import CliRunner

from gateway.cli.log import log
from gateway.keys import load_signing_key
from gateway.ledger.retention import prune
from gateway.ledger.store import open_store
from tests.web.helpers import Seeded


def _cli_show(fresh: Seeded, record_id: str) -> object:
    res = CliRunner().invoke(
        log,
        ["show", record_id, "--format", "json", "--db", fresh.url, "--keys-dir", str(fresh.keys)],
    )
    assert res.exit_code == 0, res.output
    return orjson.loads(res.output)


def test_page_and_cli_show_the_same_location(fresh: Seeded) -> None:
    kept, pruned = fresh.records[-1], fresh.records[0]
    before = datetime(2024, 2, 1, tzinfo=UTC)
    assert pruned.recorded_at < before < kept.recorded_at
    with open_store(
        fresh.url, signer=load_signing_key(fresh.keys / "gateway-signing.key"), create=False
    ) as store:
        result = prune(store, before)
    assert result.count > 0
    c = fresh.client()
    for rec in (kept, pruned):
        resp = c.get(f"/records/{rec.record_id}?format=json")
        assert resp.status == 200
        assert resp.json() == _cli_show(fresh, rec.record_id)
    data = c.get(f"/records/{pruned.record_id}?format=json").json()
    assert data["record_id"] == pruned.record_id and "record" not in data
    assert data["pruned"] == f"body removed by retention (prune #{result.prune_id})"
    assert "The log still verifies it by its hash" in c.page(f"/records/{pruned.record_id}").text
    assert c.get(f"/records/{kept.record_id}?format=json").json()["record"]["record_id"] == (
        kept.record_id
    )
