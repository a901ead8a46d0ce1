"""Publishers are authenticated and authorised by the gateway itself: an event counts only
if a publisher the policy declares signed its exact bytes and may send its type. Spoofed
consent and erasure (from anyone who can reach the broker) are dead-lettered and change
nothing; the signing scheme is documented precisely enough to implement elsewhere, with
test vectors this file recomputes."""

from __future__ import annotations

import base64
import hashlib
import re
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.consent import ConsentState
from gateway.crypto import SigningKey
from gateway.errors import (
    BadSignature,
    KeyFileError,
    PolicyError,
    PublisherNotAllowed,
    UnknownPublisher,
    Unsigned,
)
from gateway.keys import demo_publisher_keys_dir
from gateway.pipeline import Admitted, DeadLetter
from gateway.policy import parse_policy
from gateway.publishers import (
    HEADER_PUBLISHER,
    HEADER_SIGNATURE,
    Publisher,
    PublisherRegistry,
    PublisherSigner,
    signed_bytes,
)
from gateway.runtime import Core, demo_signers
from gateway.settings import Settings
from tests.conftest import ROOT, event

DOC = ROOT / "docs" / "publisher-signing.md"


# --- the documented scheme, recomputed ----------------------------------------------------


def vectors() -> list[dict[str, str]]:
    text = DOC.read_text()
    out = []
    for block in re.findall(r"```text\n(# test vector: [^\n]+\n.*?)```", text, re.S):
        fields: dict[str, str] = {}
        for line in block.splitlines()[1:]:
            name, _, value = line.partition(": ")
            fields[name] = value
        fields["scheme"] = block.splitlines()[0].split(": ", 1)[1]
        out.append(fields)
    return out


def test_the_docs_hold_both_vectors() -> None:
    assert sorted(v["scheme"] for v in vectors()) == ["ed25519", "hmac-sha256"]


@pytest.mark.parametrize("vector", vectors(), ids=lambda v: v["scheme"])
def test_vectors_recomputed(vector: dict[str, str]) -> None:
    value = vector["value"].encode("utf-8")
    name = vector["publisher"]
    assert len(value) == int(vector["value length"])
    signed = signed_bytes(name, value)
    assert signed == b"disclosure-gateway/event/v1\n" + name.encode() + b"\n" + value
    assert hashlib.sha256(signed).hexdigest() == vector["signed bytes SHA-256"]
    if vector["scheme"] == "ed25519":
        seed = bytes.fromhex(vector["ed25519 seed (hex)"])
        signer = PublisherSigner(
            name, signing_key=SigningKey(Ed25519PrivateKey.from_private_bytes(seed))
        )
        public = signer._signing_key.public_key()  # type: ignore[union-attr]
        assert public.to_text() == vector["public key"]
        publisher = Publisher(name, frozenset(["consent.changed"]), "ed25519", public_key=public)
    else:
        secret = bytes.fromhex(vector["hmac secret (hex)"])
        signer = PublisherSigner(name, secret=secret)
        publisher = Publisher(name, frozenset(["payment.settled"]), "hmac-sha256", secret=secret)
    headers = signer.headers(value)
    assert headers == [
        (HEADER_PUBLISHER, vector["gateway-publisher"].encode()),
        (HEADER_SIGNATURE, vector["gateway-signature"].encode()),
    ]
    # And the gateway's side accepts exactly those headers for exactly that value.
    registry = PublisherRegistry([publisher])
    assert registry.verify(value, headers) is publisher
    with pytest.raises(BadSignature):
        registry.verify(value + b" ", headers)


# --- the registry -------------------------------------------------------------------------


@pytest.fixture
def keys() -> dict[str, Any]:
    accounts = SigningKey.generate()
    secret = bytes(range(32))
    registry = PublisherRegistry(
        [
            Publisher(
                "accounts",
                frozenset(["consent.changed", "erasure.requested"]),
                "ed25519",
                public_key=accounts.public_key(),
            ),
            Publisher("orders", frozenset(["order.placed"]), "hmac-sha256", secret=secret),
        ]
    )
    return {
        "registry": registry,
        "accounts": PublisherSigner("accounts", signing_key=accounts),
        "orders": PublisherSigner("orders", secret=secret),
    }


VALUE = b'{"event_id":"evt-1"}'


def test_a_signed_value_verifies(keys: dict[str, Any]) -> None:
    reg = keys["registry"]
    assert reg.verify(VALUE, keys["accounts"].headers(VALUE)).name == "accounts"
    assert reg.verify(VALUE, keys["orders"].headers(VALUE)).name == "orders"


def test_unsigned(keys: dict[str, Any]) -> None:
    reg, headers = keys["registry"], keys["accounts"].headers(VALUE)
    for given in (None, [], headers[:1], headers[1:], [("other", b"x")]):
        with pytest.raises(Unsigned):
            reg.verify(VALUE, given)


def test_unknown_publisher(keys: dict[str, Any]) -> None:
    mallory = PublisherSigner("mallory", signing_key=SigningKey.generate())
    with pytest.raises(UnknownPublisher) as e:
        keys["registry"].verify(VALUE, mallory.headers(VALUE))
    assert "mallory" in str(e.value) and "accounts, orders" in str(e.value)
    # A name that is no publisher name at all is not echoed.
    odd = [(HEADER_PUBLISHER, b"Zelda Quintana"), mallory.headers(VALUE)[1]]
    with pytest.raises(UnknownPublisher) as e:
        keys["registry"].verify(VALUE, odd)
    assert "Zelda" not in str(e.value)


def test_bad_signatures(keys: dict[str, Any]) -> None:
    reg = keys["registry"]
    good = keys["accounts"].headers(VALUE)
    impostor = PublisherSigner("accounts", signing_key=SigningKey.generate()).headers(VALUE)
    sig = good[1][1].decode()
    _, _, b64 = sig.split(".")
    flipped = base64.b64encode(bytes([base64.b64decode(b64)[0] ^ 1]) + base64.b64decode(b64)[1:])
    cases = [
        (VALUE + b"x", good),  # the value altered after signing
        (VALUE, impostor),  # signed with another key under the name
        (VALUE, [good[0], (HEADER_SIGNATURE, b"v1.ed25519." + flipped)]),
        (VALUE, [good[0], (HEADER_SIGNATURE, sig.replace("v1.", "v2.", 1).encode())]),
        (VALUE, [good[0], (HEADER_SIGNATURE, sig.replace("ed25519", "hmac-sha256").encode())]),
        (VALUE, [good[0], (HEADER_SIGNATURE, b"v1.ed25519.not base64!")]),
        (VALUE, [good[0], (HEADER_SIGNATURE, b"v1.ed25519." + base64.b64encode(b"short"))]),
        (VALUE, [good[0], (HEADER_SIGNATURE, b"\xff")]),
        (VALUE, [*good, good[1]]),  # two signature headers
        (VALUE, [good[0], *good]),  # two publisher headers
        # The orders secret over the value, claimed as accounts.
        (VALUE, [good[0], keys["orders"].headers(VALUE)[1]]),
    ]
    for value, headers in cases:
        with pytest.raises(BadSignature):
            reg.verify(value, headers)


def test_authorise(keys: dict[str, Any]) -> None:
    reg = keys["registry"]
    orders = reg.publishers["orders"]
    reg.authorise(orders, "order.placed")
    with pytest.raises(PublisherNotAllowed) as e:
        reg.authorise(orders, "consent.changed")
    assert "may come from: accounts" in str(e.value)


# --- through the pipeline: spoofing changes nothing -----------------------------------------


@pytest.fixture(scope="module")
def signers(core: Core, settings: Settings) -> dict[str, PublisherSigner]:
    return demo_signers(settings, core.policy)


def opt_in_with_email_grant(customer: str, n: int) -> bytes:
    return orjson.dumps(
        event(
            "consent.changed",
            {
                "marketing": "opt_in",
                "source": "account",
                "sensitive": [{"scope": "agent", "target": "email", "granted": True}],
            },
            customer=customer,
            n=n,
        )
    )


def test_a_signed_consent_change_from_its_publisher_is_applied(
    core: Core, signers: dict[str, PublisherSigner]
) -> None:
    states: dict[str, ConsentState] = {}
    raw = opt_in_with_email_grant("C-pub-1", 1)
    assert signers["consent.changed"].name == "accounts"
    out = core.pipeline.process(raw, states, signers["consent.changed"].headers(raw))
    assert out.dead_letter is None
    assert states["C-pub-1"].sensitive == {"agent:email"}


@pytest.mark.parametrize(
    "who,reason",
    [
        ("nobody", "unsigned"),
        ("mallory", "unknown_publisher"),
        ("accounts-impostor", "bad_signature"),
        ("orders", "publisher_not_allowed"),
        ("web", "publisher_not_allowed"),
    ],
)
@pytest.mark.parametrize("kind", ["consent", "erasure"])
def test_spoofed_consent_and_erasure_are_dead_lettered_and_not_applied(
    core: Core, signers: dict[str, PublisherSigner], who: str, reason: str, kind: str
) -> None:
    customer = f"C-spoof-{who}-{kind}"
    if kind == "consent":
        raw = opt_in_with_email_grant(customer, 2)
    else:
        raw = orjson.dumps(event("erasure.requested", {"request_id": "DSR-1"}, customer=customer))
    headers: list[tuple[str, bytes]] | None
    if who == "nobody":
        headers = None
    elif who == "mallory":
        headers = PublisherSigner("mallory", signing_key=SigningKey.generate()).headers(raw)
    elif who == "accounts-impostor":
        headers = PublisherSigner("accounts", signing_key=SigningKey.generate()).headers(raw)
    else:
        signer = next(s for s in signers.values() if s.name == who)
        headers = signer.headers(raw)
    before = {customer: ConsentState(subject_type="consumer")}
    states = dict(before)
    out = core.pipeline.process(raw, states, headers)
    assert out.dead_letter is not None and out.dead_letter.reason == reason
    assert (out.records, out.messages, out.erasure_request) == ([], [], None)
    assert states == before  # nothing applied
    # The dead letter names the event by the id it claims (so its publisher can find it).
    assert out.dead_letter.event_id == orjson.loads(raw)["event_id"]
    # Checked ahead (as a worker checks a batch on its threads): the same refusal.
    ahead = core.pipeline.admit(raw, headers, signer=core.pipeline.check_signature(raw, headers))
    assert isinstance(ahead, DeadLetter)
    assert (ahead.reason, ahead.event_id) == (reason, out.dead_letter.event_id)


def test_the_offline_replay_does_not_verify(core: Core) -> None:
    raw = opt_in_with_email_grant("C-pub-2", 3)
    states: dict[str, ConsentState] = {}
    assert core.pipeline.process(raw, states).dead_letter.reason == "unsigned"  # type: ignore[union-attr]
    assert core.pipeline.process(raw, states, verify=False).dead_letter is None
    assert states["C-pub-2"].marketing == "opt_in"


def test_admit_reports_the_publisher(core: Core, signers: dict[str, PublisherSigner]) -> None:
    raw = orjson.dumps(event("site.visit", {"session_id": "s-1"}, customer="C-pub-3"))
    got = core.pipeline.admit(raw, signers["site.visit"].headers(raw))
    assert not hasattr(got, "reason")
    assert got.publisher == "web" and got.event.event_type == "site.visit"  # type: ignore[union-attr]


def test_admission_takes_a_signature_checked_ahead_as_it_is(
    core: Core, signers: dict[str, PublisherSigner], monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = orjson.dumps(event("site.visit", {"session_id": "s-2"}, customer="C-pub-4"))
    headers = signers["site.visit"].headers(raw)
    signer = core.pipeline.check_signature(raw, headers)
    assert isinstance(signer, Publisher) and signer.name == "web"

    def not_again(*args: Any) -> None:
        raise AssertionError("checked twice")

    monkeypatch.setattr(core.pipeline.publishers, "verify", not_again)
    got = core.pipeline.admit(raw, headers, signer=signer)
    assert isinstance(got, Admitted) and got.publisher == "web"
    # Too large: refused before any signature check, ahead or not.
    huge = b" " * (core.pipeline.max_event_bytes + 1)
    assert core.pipeline.check_signature(huge, headers) is None
    dead = core.pipeline.admit(huge, headers, signer=None)
    assert isinstance(dead, DeadLetter) and dead.reason == "too_large"


# --- the policy section and the key files -------------------------------------------------

POLICY = (ROOT / "agents.yaml").read_text()


@pytest.mark.parametrize(
    "old,new,message,line",
    [
        (
            "    events: [site.visit]",
            "    events: [site.visited]",
            "unknown event type 'site.visited'",
            "    events: [site.visited]",
        ),
        (
            "    key: publishers/web.pub",
            "    key: publishers/web.pub\n    secret: publishers/web.secret",
            "exactly one of key",
            "  web:",
        ),
        (
            "    key: publishers/web.pub",
            "    description: no key",
            "exactly one of key",
            "  web:",
        ),
    ],
)
def test_publisher_section_errors_name_the_line(
    old: str, new: str, message: str, line: str
) -> None:
    bad = POLICY.replace(old, new)
    with pytest.raises(PolicyError) as e:
        parse_policy(bad, "agents.yaml")
    assert message in str(e.value)
    assert e.value.line is not None
    assert bad.splitlines()[e.value.line - 1] == line


def test_demo_keys_for_publishers(settings: Settings, core: Core) -> None:
    keys = settings.keys_dir
    own = demo_publisher_keys_dir(keys)
    assert not own.is_relative_to(keys)
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    for name in ("accounts", "web", "support"):
        assert (keys / "publishers" / f"{name}.pub").exists()
        assert mode(own / f"{name}.key") == 0o600
    assert mode(keys / "publishers" / "orders.secret") == 0o600
    assert mode(own / "orders.secret") == 0o600
    assert (own / "orders.secret").read_bytes() == (
        keys / "publishers" / "orders.secret"
    ).read_bytes()
    assert mode(keys / "worker.key") == 0o600
    assert set(core.publishers.publishers) == {"accounts", "orders", "web", "support"}
    assert core.publishers.publishers["orders"].scheme == "hmac-sha256"


def test_a_readable_publisher_secret_is_refused(tmp_path: Path) -> None:
    from gateway.keys import create_publisher_key, load_publisher_secret

    made = create_publisher_key(
        tmp_path / "keys", "orders", hmac_secret=True, out_dir=tmp_path / "own"
    )
    made.gateway.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_publisher_secret(made.gateway)
    with pytest.raises(KeyFileError, match="another directory"):
        create_publisher_key(tmp_path / "keys", "web", out_dir=tmp_path / "keys" / "publishers")


def test_admit_checks_size_before_anything_else(core: Core) -> None:
    huge = b'{"event_id": "evt-huge-0001", "pad": "' + b"x" * core.pipeline.max_event_bytes + b'"}'
    got = core.pipeline.admit(huge, None)
    assert getattr(got, "reason", None) == "too_large"


def test_a_dead_letter_can_carry_its_input_position(core: Core) -> None:
    dead = core.pipeline.admit(b"not json", None)
    assert getattr(dead, "position", "missing") is None
    placed = dead.at("gateway.events", 3, 42)  # type: ignore[union-attr]
    assert placed.position == {"topic": "gateway.events", "partition": 3, "offset": 42}
    assert orjson.loads(placed.to_json())["position"] == placed.position
    assert "position" not in orjson.loads(dead.to_json())  # type: ignore[union-attr]


def test_keys_cli_makes_worker_and_publisher_keys(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    runner = CliRunner()
    d = tmp_path / "keys"
    r = runner.invoke(main, ["keys", "init", "--dir", str(d)])
    assert r.exit_code == 0, r.output
    assert "Worker key" in r.output and (d / "worker.key").exists()
    out = tmp_path / "handed-over"
    r = runner.invoke(main, ["keys", "publisher", "accounts", "--dir", str(d), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "key: publishers/accounts.pub" in r.output
    assert (d / "publishers" / "accounts.pub").exists() and (out / "accounts.key").exists()
    assert "PRIVATE" not in r.output
    r = runner.invoke(
        main, ["keys", "publisher", "orders", "--hmac", "--dir", str(d), "--out", str(out)]
    )
    assert r.exit_code == 0 and "secret: publishers/orders.secret" in r.output
    secret = (out / "orders.secret").read_text().strip()
    assert secret not in r.output
    signer = PublisherSigner.from_file("orders", out / "orders.secret")
    assert signer.scheme == "hmac-sha256"
    assert PublisherSigner.from_file("accounts", out / "accounts.key").scheme == "ed25519"
    (d / "worker.key").unlink()
    r = runner.invoke(main, ["keys", "show", "--dir", str(d)])
    assert r.exit_code == 1 and "gateway keys worker" in r.output
    r = runner.invoke(main, ["keys", "worker", "--dir", str(d)])
    assert r.exit_code == 0 and (d / "worker.key").exists()
