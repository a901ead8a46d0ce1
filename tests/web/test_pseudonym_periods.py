"""The review page finds a subject's whole history across pseudonym periods: a customer id
becomes its references of every period, and the records list, the access report and their
downloads all cover them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.keys import load_signing_key
from gateway.ledger.store import open_store
from gateway.records import DecisionRecord
from gateway.rotation import load_pseudonym_keyring
from gateway.settings import Settings
from gateway.web.auth import Credentials
from gateway.web.auth import hash_password as make_hash
from gateway.web.config import config_from_settings
from gateway.web.params import BadParam, subject_refs
from tests.ledger.data import database, make_record, ref
from tests.web.helpers import PASSWORD, SHARED_LIMITS, USER, Client, Server, make_keys, seed

CUSTOMER = "C-1001"


@pytest.fixture
def rotated(tmp_path: Path) -> Iterator[tuple[Server, list[DecisionRecord], list[DecisionRecord]]]:
    """A log with records of one customer from before and after `gateway keys rotate
    pseudonym`, and the review page serving it as `gateway review` configures it."""
    with database("sqlite", tmp_path) as url:
        keys = make_keys(tmp_path / "keys")
        records = seed(url, keys, n=300)
        before = [r for r in records if r.subject_ref == ref(CUSTOMER)]
        res = CliRunner().invoke(main, ["keys", "rotate", "pseudonym", "--dir", str(keys)])
        assert res.exit_code == 0, res.output
        new_ref = load_pseudonym_keyring(keys).subject_ref(CUSTOMER)
        when = datetime(2026, 3, 1, tzinfo=UTC)
        after = [
            make_record(agent, CUSTOMER, when, seq=9000 + n).model_copy(
                update={"subject_ref": new_ref}
            )
            for n, agent in enumerate(("shipping", "payments", "email"))
        ]
        with open_store(url, signer=load_signing_key(keys / "gateway-signing.key")) as s:
            s.append(after, shard=2)
        config = config_from_settings(
            Settings(ledger_url=url, keys_dir=keys), Credentials.parse(USER, make_hash(PASSWORD))
        )
        config.limits = SHARED_LIMITS
        server = Server(config)
        try:
            yield server, before, after
        finally:
            server.close()
            config.store.close()


def test_the_subject_page_shows_records_of_every_pseudonym_period(
    rotated: tuple[Server, list[DecisionRecord], list[DecisionRecord]],
) -> None:
    server, before, after = rotated
    assert before and after
    new_ref, old_ref = after[0].subject_ref, before[0].subject_ref
    c = Client(server)
    assert c.login().status == 303

    page = c.page("/subject?" + urlencode({"subject": CUSTOMER}), follow=True)
    assert page.status == 200
    # The customer id became both periods' references, current first.
    final = parse_qs(urlsplit(c.history[-1]).query)
    assert final["subject_ref"] == [new_ref, old_ref] and CUSTOMER not in c.history[-1]
    total = len(before) + len(after)
    assert f'<dd id="subject-records">{total:,} ' in page.text
    assert f'<dd class="mono" id="subject-ref">{new_ref}</dd>' in page.text
    assert old_ref in page.text

    rep = c.get("/subject?" + urlencode({"subject": CUSTOMER, "format": "json"}), follow=True)
    assert rep.json()["records"] == total
    assert rep.json()["subject_refs"] == [new_ref, old_ref]

    # The page's own links (records list, downloads) keep both periods.
    m = re.search(r'<dd id="subject-records">[^<]*<a href="([^"]+)"', page.text)
    assert m
    listed = c.get(m[1].replace("&amp;", "&") + "&format=json&per_page=200")
    assert {r["record_id"] for r in listed.json()} == {r.record_id for r in before + after}
    records = c.get("/records?" + urlencode({"subject": CUSTOMER, "format": "json"}), follow=True)
    assert {r["record_id"] for r in records.json()} == {r.record_id for r in before + after}
    listing = c.page("/records?" + urlencode({"subject": CUSTOMER}), follow=True)
    assert f'<span id="record-count">{total:,}</span>' in listing.text

    # One period's reference alone is that period only.
    one = c.get("/subject?" + urlencode({"subject_ref": old_ref, "format": "json"}))
    assert one.json()["records"] == len(before)


def test_subject_refs_accept_both_forms_and_nothing_else() -> None:
    old, new = "subj_" + "a" * 32, "subj_0f3c_" + "b" * 32
    assert subject_refs({"subject_ref": f"{new} {old}"}) == (new, old)
    assert subject_refs({"subject_ref": f"{new},{new}"}) == (new,)
    for bad in ("subj_" + "a" * 31, "subj_0f3_" + "b" * 32, "subj_0F3C_" + "b" * 32, "C-1001"):
        with pytest.raises(BadParam, match="subject reference"):
            subject_refs({"subject_ref": bad})
    with pytest.raises(BadParam, match="at most"):
        subject_refs({"subject_ref": " ".join(f"subj_{n:04x}_" + "c" * 32 for n in range(17))})
