"""The decision record: one per (event, agent) — a disclosure, a withholding, or an
erasure notice. It is what the disclosure log stores and what reviewers query.

It holds no raw personal data: the subject is a keyed pseudonym (``subject_ref``), fields
are named by path and category only, and the payload is represented by its digest.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter

Outcome = Literal["disclosed", "withheld", "erasure_notice"]
SubjectType = Literal["consumer", "business"]

# Fixed namespace so that reprocessing an event yields the same ids (duplicates are
# recognisable by id after a crash).
_NS = uuid.UUID("6f1d9d3e-58a4-4c1e-9a51-3f0b2f7a9c11")


_NS_BYTES = _NS.bytes  # a property computed on every access: once here


def _uuid5(name: str) -> str:
    """``str(uuid.uuid5(_NS, name))`` without the UUID object (hot path): the SHA-1 in
    hex, with the version nibble set to 5 and the variant bits to 10."""
    x = hashlib.sha1(_NS_BYTES + name.encode()).hexdigest()
    variant = "89ab"[int(x[16], 16) & 3]
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{variant}{x[17:20]}-{x[20:32]}"


def disclosure_id(event_id: str, agent: str, kind: str = "event") -> str:
    return _uuid5(f"{kind}\x1f{event_id}\x1f{agent}")


def decision_id(event_id: str, policy_version: str) -> str:
    return _uuid5(f"decision\x1f{event_id}\x1f{policy_version}")


class Recipient(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    legal_name: str
    address: str
    role: Literal["service_provider", "third_party", "government"]
    contract: str | None = None


class DecisionRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    record_id: str
    decision_id: str
    event_id: str
    event_type: str
    occurred_at: datetime
    recorded_at: datetime
    subject_ref: str
    subject_type: SubjectType
    agent: str
    recipient: Recipient
    outcome: Outcome
    reason: str | None = None
    purposes: list[str] = []
    legal_bases: list[str] = []
    categories_sent: list[str] = []
    categories_transformed: list[str] = []
    categories_removed: list[str] = []
    paths_sent: list[str] = []
    paths_transformed: list[str] = []
    paths_removed: list[str] = []
    consent: list[str] = []
    policy_version: str
    key_id: str | None = None
    payload_digest: str | None = None
    topic: str | None = None

    @classmethod
    def trusted(cls, **values: Any) -> DecisionRecord:
        """A record from trusted, already-valid values: every field given, none checked.

        What ``model_construct`` does, without its per-field default and alias handling
        (a third of the cost of a decision on the hot path)."""
        if tuple(values) != _FIELDS:  # given out of order: pydantic keeps field order
            values = {name: values[name] for name in _FIELDS}
        rec = cls.__new__(cls)
        object.__setattr__(rec, "__dict__", values)
        object.__setattr__(rec, "__pydantic_fields_set__", set(_FIELDS))
        object.__setattr__(rec, "__pydantic_extra__", None)
        object.__setattr__(rec, "__pydantic_private__", None)
        return rec

    def to_json(self) -> bytes:
        """Canonical JSON: sorted keys, no whitespace -- exactly the bytes of
        ``orjson.dumps(self.model_dump(mode="json"), option=OPT_SORT_KEYS)`` (hashed into
        the Merkle tree, so they must never change), built without pydantic's serializer:
        every field is a str, a list of str, None, a datetime or the recipient."""
        d = self.__dict__
        if len(d) != len(_FIELDS):  # not a complete record: let pydantic say what it is
            return orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        out = dict(d)
        out["occurred_at"] = _datetime_json(d["occurred_at"])
        out["recorded_at"] = _datetime_json(d["recorded_at"])
        out["recipient"] = _recipient_json(d["recipient"])
        return orjson.dumps(out, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes | str) -> DecisionRecord:
        return cls.model_validate(orjson.loads(data))

    def leaf_hash_input(self) -> bytes:
        """Canonical bytes hashed into the Merkle tree (sorted keys, no whitespace)."""
        return self.to_json()


_FIELDS = tuple(DecisionRecord.model_fields)
_DATETIME = TypeAdapter(datetime)
_RECIPIENTS: dict[int, tuple[Recipient, dict[str, Any]]] = {}


def _datetime_json(value: datetime) -> str:
    """A datetime as pydantic writes it in JSON mode: ISO 8601, "Z" for UTC, offsets to
    the minute. ``isoformat`` agrees except for "Z"; anything unusual goes to pydantic."""
    off = value.utcoffset()
    if (off is not None and (off.seconds % 60 or off.microseconds)) or value.year < 1000:
        return _DATETIME.dump_python(value, mode="json")  # type: ignore[no-any-return]
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _recipient_json(r: Recipient) -> dict[str, Any]:
    # The pipeline reuses one Recipient per agent: dump each once (keyed by identity and
    # holding the object, so an id is never reused while cached).
    got = _RECIPIENTS.get(id(r))
    if got is not None and got[0] is r:
        return got[1]
    dumped = r.model_dump(mode="json")
    if len(_RECIPIENTS) < 1024:
        _RECIPIENTS[id(r)] = (r, dumped)
    return dumped


def payload_digest(message: bytes) -> str:
    return "sha256:" + hashlib.sha256(message).hexdigest()
