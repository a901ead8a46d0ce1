"""Decision records: the hand-written hot paths give exactly what they stand in for. The
record JSON is hashed into the Merkle tree, so its bytes must be pydantic's, byte for
byte; trusted (unvalidated) records must equal validated ones; record ids must be
standard UUIDs (RFC 9562 version 8: keyed and content-addressed)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent import ConsentState
from gateway.dev.samples import random_events, scenario
from gateway.records import DecisionRecord, RecordIds, uuid_format
from gateway.runtime import Core
from tests.conftest import with_aggregates


def pydantic_json(r: DecisionRecord) -> bytes:
    return orjson.dumps(r.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


@pytest.fixture(scope="module")
def records(core: Core) -> list[DecisionRecord]:
    """Every record the pipeline makes of the scenario and a few thousand random events."""
    states: dict[str, ConsentState] = {}
    events = [*scenario(), *random_events(2500, seed=3, customers=40)]

    def made() -> Iterator[DecisionRecord]:
        so_far: list[DecisionRecord] = []
        for result in with_aggregates(core, events, states):
            so_far.extend(result.records)
            if result.erasure_request is not None:  # the notices, as the sink makes them
                result.records.extend(
                    core.pipeline.erasure_outputs(result.erasure_request, so_far).records
                )
            yield from result.records

    out = list(made())
    assert {r.outcome for r in out} == {
        "disclosed",
        "withheld",
        "erasure_notice",
        "contributed",
        "aggregated",
    }
    return out


def test_record_json_is_pydantics_for_every_pipeline_record(
    records: list[DecisionRecord],
) -> None:
    assert len(records) > 3000
    for r in records:
        assert r.to_json() == pydantic_json(r)
        validated = DecisionRecord.from_json(r.to_json())  # read back: validated, not trusted
        assert validated == r
        assert validated.to_json() == pydantic_json(validated)


_OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
_DATETIMES = st.datetimes(
    min_value=datetime(1, 1, 2), timezones=st.one_of(st.none(), st.just(UTC), _OFFSETS)
)


@settings(max_examples=300, deadline=None)
@given(
    occurred=_DATETIMES,
    recorded=_DATETIMES,
    reason=st.one_of(st.none(), st.text()),
    purposes=st.lists(st.text(max_size=30), max_size=3),
)
def test_record_json_is_pydantics_for_any_datetime_and_text(
    records: list[DecisionRecord],
    occurred: datetime,
    recorded: datetime,
    reason: str | None,
    purposes: list[str],
) -> None:
    # Offsets to the second or microsecond, years before 1000, naive times: the cases the
    # fast path hands back to pydantic, next to the ones it writes itself.
    for base in (records[0], records[-1]):
        r = base.model_copy(
            update={
                "occurred_at": occurred,
                "recorded_at": recorded,
                "reason": reason,
                "purposes": purposes,
            }
        )
        assert r.to_json() == pydantic_json(r)


def test_trusted_records_equal_validated_ones(records: list[DecisionRecord]) -> None:
    for r in records[:500]:
        assert DecisionRecord.model_validate(r.model_dump()) == r
        assert r.model_fields_set == set(DecisionRecord.model_fields)


@settings(max_examples=500)
@given(digest=st.binary(min_size=16, max_size=32))
def test_uuid_format_is_a_standard_uuid_version_8(digest: bytes) -> None:
    text = uuid_format(digest)
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
    # The digest's first 16 bytes, only the version and variant bits replaced: ids in logs
    # written by any version of the gateway are the same ids.
    want = bytearray(digest[:16])
    want[6] = (want[6] & 0x0F) | 0x80
    want[8] = (want[8] & 0x3F) | 0x80
    assert parsed.bytes == bytes(want)


def test_uuid_format_of_a_known_digest() -> None:
    assert uuid_format(bytes(range(200, 232))) == "c8c9cacb-cccd-8ecf-90d1-d2d3d4d5d6d7"


def test_record_ids_are_standard_uuids(records: list[DecisionRecord]) -> None:
    for r in records[:500]:
        for value in (r.record_id, r.decision_id):
            assert uuid.UUID(value).version == 8


def test_record_ids_are_keyed() -> None:
    a, b = RecordIds(b"a" * 32), RecordIds(b"b" * 32)
    assert a.decision_id("fp", "pv") != b.decision_id("fp", "pv")
    assert a.decision_id("fp", "pv") == RecordIds(b"a" * 32).decision_id("fp", "pv")
    assert a.record_id("fp", "x", "event", "d") != a.record_id("fp", "y", "event", "d")
    assert a.record_id("fp", "x", "event", "d") != a.record_id("fp", "x", "event", "e")


def test_records_written_before_fingerprints_and_consulted_states_still_parse(
    records: list[DecisionRecord],
) -> None:
    new = records[0]
    assert new.event_fp and new.consent_state is not None
    old = orjson.loads(new.to_json())
    del old["event_fp"], old["consent_state"]
    parsed = DecisionRecord.from_json(orjson.dumps(old))
    assert (parsed.event_fp, parsed.consent_state) == (None, None)
    assert parsed.to_json() == pydantic_json(parsed)
