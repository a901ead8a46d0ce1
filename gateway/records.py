"""The decision record: one per (event, agent) — a disclosure, a withholding, or an
erasure notice. It is what the disclosure log stores and what reviewers query.

It holds no raw personal data: the subject is a keyed pseudonym (``subject_ref``), fields
are named by path and category only, and the payload is represented by its digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, TypeAdapter

from gateway.crypto import HmacSha256, derive_key

# ``contributed``: the event counted towards an aggregate-only agent's tables (nothing was
# sent for it); ``aggregated``: a window's aggregate tables sent to such an agent (its
# subject type is ``aggregate``: many subjects, none identified).
Outcome = Literal["disclosed", "withheld", "erasure_notice", "contributed", "aggregated"]
SubjectType = Literal["consumer", "business", "aggregate"]


def uuid_format(digest: bytes) -> str:
    """The first 16 bytes of ``digest`` as an RFC 9562 UUID, version 8 (custom) and the
    RFC variant: record ids look and sort like any UUID."""
    b = bytearray(digest[:16])
    b[6] = (b[6] & 0x0F) | 0x80  # version 8
    b[8] = (b[8] & 0x3F) | 0x80  # variant 10xx
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def decision_digest(
    outcome: str,
    reason: str | None,
    paths_sent: Iterable[str],
    paths_transformed: Iterable[str],
    paths_removed: Iterable[str],
    purposes: Iterable[str],
    legal_bases: Iterable[str],
    policy_version: str,
) -> str:
    """SHA-256 (hex) of what a decision decided: its outcome and reason, the paths sent,
    transformed and removed, the purposes and legal bases, and the policy version. Two
    decisions with the same digest for the same event and agent disclosed the same thing
    on the same grounds."""
    material = [
        outcome,
        reason,
        sorted(paths_sent),
        sorted(paths_transformed),
        sorted(paths_removed),
        sorted(purposes),
        sorted(legal_bases),
        policy_version,
    ]
    return hashlib.sha256(orjson.dumps(material)).hexdigest()


class RecordIds:
    """Record and decision ids: keyed (HMAC-SHA256 with the workers' shared key, label
    ``record-id``) and content-addressed, so that

    * the same event decided the same way gets the same ids again (a redelivery is
      recognised as a duplicate),
    * a different event under a reused event id, or the same event decided differently
      (the state changed meanwhile), gets ids of its own (nothing hides under an older
      record), and
    * nobody without the workers' key can predict an id.
    """

    __slots__ = ("_mac",)

    def __init__(self, worker_key: bytes):
        self._mac = HmacSha256(derive_key(worker_key, "record-id"))

    def _id(self, *parts: str) -> str:
        msg = "\x1f".join(parts).encode("utf-8")
        return uuid_format(self._mac.digest(msg))

    def decision_id(self, event_fp: str, policy_version: str) -> str:
        """One event's decision under one policy version (all its records share it)."""
        return self._id("decision", event_fp, policy_version)

    def record_id(self, event_fp: str, agent: str, kind: str, digest: str) -> str:
        """One record: the event, the agent, the kind (``event`` or ``erasure``) and the
        :func:`decision_digest` of what was decided. Also the disclosure id the agent
        receives."""
        return self._id("record", event_fp, agent, kind, digest)


RecipientRole = Literal["service_provider", "third_party", "government", "affiliate"]


class Recipient(BaseModel):
    """Who received a disclosure. ``role``: a service provider acting for us under
    contract, a third party, a government body, or an affiliate (a company of our own
    family; recorded only for disclosures made outside the stream)."""

    model_config = ConfigDict(frozen=True)

    name: str
    legal_name: str
    address: str
    role: RecipientRole
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
    # Records written before these existed have neither.
    # SHA-256 of the event's canonical JSON: which content the record decided.
    event_fp: str | None = None
    # The subject's state the decision consulted, each value with the stamp that set it.
    consent_state: dict[str, Any] | None = None

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
        every field is a str, a list of str, None, a datetime, the recipient or the
        consulted state (a dict of JSON values already)."""
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


_FIELDS = tuple(DecisionRecord.model_fields)
_DATETIME = TypeAdapter(datetime)
_RECIPIENTS: dict[int, tuple[Recipient, dict[str, Any]]] = {}


def _datetime_json(value: datetime) -> str:
    """A datetime as pydantic writes it in JSON mode: ISO 8601, "Z" for UTC, offsets to
    the minute. ``isoformat`` agrees except for "Z"; anything unusual goes to pydantic."""
    off = value.utcoffset()
    if (off is not None and (off.seconds % 60 or off.microseconds)) or value.year < 1000:
        return _DATETIME.dump_python(value, mode="json")
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
