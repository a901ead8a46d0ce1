"""Pseudonym key periods: which master key made a subject reference, and every reference a
customer has had.

Each pseudonym master key starts a *linkability period*: references made under one key
cannot be linked to references made under another without the keys. A reference names its
period::

    subj_<32 hex>               the original key (references made before any rotation)
    subj_<4 hex key id>_<32 hex>  the key with that id

The key id is derived from the key itself (:func:`pseudonym_key_id`), so the log says which
key each reference used without holding anything secret. Per-agent pseudonym keys are
derived from the current master, so a new period also gives every agent new pseudonyms.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from gateway.crypto import derive_key, subject_ref

__all__ = [
    "KEY_ID_LENGTH",
    "PseudonymKeyring",
    "PseudonymPeriod",
    "pseudonym_key_id",
]

KEY_ID_LENGTH: Final = 4  # hex characters
_REF: Final = re.compile(r"subj_(?:([0-9a-f]{4})_)?[0-9a-f]{32}")


def pseudonym_key_id(master: bytes) -> str:
    """The public id of a pseudonym master key: 4 hex characters derived from it."""
    return derive_key(master, "pseudonym-key-id")[: KEY_ID_LENGTH // 2].hex()


@dataclass(frozen=True)
class PseudonymPeriod:
    """One pseudonym master key. ``original``: its references carry no key id."""

    master: bytes = field(repr=False)
    original: bool = False
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", pseudonym_key_id(self.master))

    def subject_ref(self, customer_id: str) -> str:
        return subject_ref(self.master, customer_id, key_id=None if self.original else self.key_id)

    def agent_key(self, agent: str) -> bytes:
        """The agent's own pseudonym key in this period."""
        return derive_key(self.master, "pseudonym:" + agent)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, PseudonymPeriod)
            and hmac.compare_digest(self.master, other.master)
            and self.original == other.original
        )

    def __hash__(self) -> int:
        return hash(self.key_id)


class PseudonymKeyring:
    """Every pseudonym period, the current one first."""

    def __init__(self, periods: Sequence[PseudonymPeriod]):
        if not periods:
            raise ValueError("a pseudonym keyring needs at least the current key")
        ids = [p.key_id for p in periods]
        if len(set(ids)) != len(ids):
            raise ValueError(f"pseudonym key ids must be distinct, got {ids}")
        if sum(p.original for p in periods) > 1:
            raise ValueError("only one pseudonym key can be the original one")
        self.periods: tuple[PseudonymPeriod, ...] = tuple(periods)

    @classmethod
    def single(cls, master: bytes) -> PseudonymKeyring:
        """A keyring before any rotation: the original key alone."""
        return cls([PseudonymPeriod(master, original=True)])

    @property
    def current(self) -> PseudonymPeriod:
        return self.periods[0]

    @property
    def master(self) -> bytes:
        """The current master key."""
        return self.current.master

    def subject_ref(self, customer_id: str) -> str:
        """The reference new records use for ``customer_id``."""
        return self.current.subject_ref(customer_id)

    def subject_refs(self, customer_id: str) -> list[str]:
        """Every reference ``customer_id`` has had, current period first: what reports
        and erasure look up to find a subject's whole history."""
        return [p.subject_ref(customer_id) for p in self.periods]

    def agent_keys(self, agents: Iterable[str]) -> dict[str, bytes]:
        """Each agent's pseudonym key in the current period."""
        return {name: self.current.agent_key(name) for name in agents}

    def period_of(self, ref: str) -> PseudonymPeriod | None:
        """The period whose key made ``ref``, or None (malformed, or a key not held)."""
        m = _REF.fullmatch(ref)
        if m is None:
            return None
        key_id = m.group(1)
        for p in self.periods:
            if (key_id is None and p.original) or (not p.original and p.key_id == key_id):
                return p
        return None

    def __repr__(self) -> str:
        return f"PseudonymKeyring({', '.join(p.key_id for p in self.periods)})"
