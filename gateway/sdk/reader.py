"""The agent side: verify, decrypt and de-duplicate what the gateway sent one agent.

An agent needs only its private key and the gateway's public signing key. Messages come
from a file written by ``gateway replay`` or from the agent's Kafka topic; either way
each is opened on its own, and a disclosure id seen before is dropped (the gateway
delivers at least once).

Keys rotate without losing messages: the reader also loads the agent's earlier private
keys kept beside the current one (``<name>.<file id>.key``, see ``gateway keys rotate
agent``), may be given several gateway public keys, and follows a gateway key hand-over
carried in the messages or given to it (the newly trusted keys are in
``learned_gateway_keys``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.crypto import AgentPrivateKey, Opener
from gateway.errors import ContextMismatch, CryptoError
from gateway.keys import load_verify_key
from gateway.rotation import load_agent_private_keys
from gateway.signed_notes import Handover


@dataclass(frozen=True)
class Received:
    disclosure_id: str
    ref: str  # this agent's own reference for the event
    kind: str
    key_id: str
    payload: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "disclosure_id": self.disclosure_id,
            "ref": self.ref,
            "kind": self.kind,
            "key_id": self.key_id,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Rejected:
    position: str
    error: str
    foreign: bool  # addressed to another agent (not tampering, just not ours)


class AgentReader:
    """Opens agent ``agent``'s messages.

    ``private_key_path``: the agent's current private key (earlier ones kept beside it are
    loaded too), or an explicit list of private key files. ``gateway_key_path``: the
    gateway's public signing key, or several. ``handovers``: hand-over notes to follow
    from those keys before reading (the gateway's ``history/signing/handover-chain``, for
    a reader whose key is older than the hand-overs the messages carry).
    """

    def __init__(
        self,
        agent: str,
        private_key_path: Path | Sequence[Path],
        gateway_key_path: Path | Sequence[Path],
        remember: int = 100_000,
        handovers: Iterable[str] = (),
    ):
        self.agent = agent
        privates: list[AgentPrivateKey] = []
        for p in [private_key_path] if isinstance(private_key_path, Path) else private_key_path:
            privates += load_agent_private_keys(p)
        gateway_paths = (
            [gateway_key_path] if isinstance(gateway_key_path, Path) else gateway_key_path
        )
        self.opener = Opener(agent, privates, [load_verify_key(p) for p in gateway_paths])
        self.opener.gateway_keys.accept_handovers(handovers)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._remember = remember
        self.duplicates = 0

    @property
    def learned_gateway_keys(self) -> tuple[Handover, ...]:
        """Gateway keys trusted because a trusted key handed over to them, in order."""
        return self.opener.gateway_keys.learned

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
        return Received(opened.disclosure_id, opened.ref, opened.kind, opened.key_id, opened.json())

    def read_many(self, messages: Iterable[tuple[str, bytes]]) -> Iterator[Received | Rejected]:
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
