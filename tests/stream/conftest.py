"""Fixtures of the stream tests: an isolated gateway deployment on the session's broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dev.broker import EmbeddedBroker
from tests.stream.helpers import Env


@pytest.fixture
def env(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Env:
    """A deployment with its own topics, keys and ledger (3 partitions)."""
    return Env.create(tmp_path, broker.bootstrap, topic_prefix)
