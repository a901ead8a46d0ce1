"""The agent side: verify, decrypt and de-duplicate what the gateway sent one agent.

An agent needs only its private key and the gateway's public signing key. Messages come
from a file written by ``gateway replay`` or from the agent's Kafka topic; either way
each is opened on its own, and a disclosure id seen before is dropped (the gateway
delivers at least once).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.crypto import Opener
from gateway.errors import ContextMismatch, CryptoError
from gateway.keys import load_agent_private_key, load_verify_key


@dataclass(frozen=True)
class Received:
    disclosure_id: str
    event_id: str
    kind: str
    key_id: str
    payload: Any

    def to_json(self) -> dict[str, Any]:
        return {"disclosure_id": self.disclosure_id, "event_id": self.event_id,
                "kind": self.kind, "key_id": self.key_id, "payload": self.payload}


@dataclass(frozen=True)
class Rejected:
    position: str
    error: str
    foreign: bool  # addressed to another agent (not tampering, just not ours)


class AgentReader:
    def __init__(self, agent: str, private_key_path: Path, gateway_key_path: Path,
                 remember: int = 100_000):
        self.agent = agent
        self.opener = Opener(agent, load_agent_private_key(private_key_path),
                             load_verify_key(gateway_key_path))
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.duplicates = 0

    def is_duplicate(self, disclosure_id: str) -> bool:
        if disclosure_id in self._seen:
            self._seen.move_to_end(disclosure_id)
            self.duplicates += 1
            return True
        self._seen[disclosure_id] = None
        if len(self._seen) > self._remember:  # bounded memory on a long-running consumer
            self._seen.popitem(last=False)
        return False

    def read(self, message: bytes) -> Received | None:
        """The message's content, or None for a duplicate. Raises CryptoError."""
        opened = self.opener.open(message)
        if self.is_duplicate(opened.disclosure_id):
            return None
        return Received(opened.disclosure_id, opened.event_id, opened.kind, opened.key_id,
                        opened.json())

    def read_many(self, messages: Iterable[tuple[str, bytes]]
                  ) -> Iterator[Received | Rejected]:
        for position, message in messages:
            try:
                got = self.read(message)
            except CryptoError as e:
                yield Rejected(position, str(e), isinstance(e, ContextMismatch))
                continue
            if got is not None:
                yield got


def messages_in_file(path: Path) -> Iterator[tuple[str, bytes]]:
    with path.open("rb") as fh:
        for n, line in enumerate(fh, start=1):
            line = line.rstrip(b"\r\n")
            if line:
                yield f"{path.name}:{n}", line
