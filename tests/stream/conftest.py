"""Fixtures of the stream tests: an isolated gateway deployment on the session's broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.dev.broker import EmbeddedBroker
from tests.stream.helpers import Env


@pytest.fixture
def env(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Env:
    """A deployment with its own topics, keys and ledger (3 partitions)."""
    return Env.create(tmp_path, broker.bootstrap, topic_prefix)


@pytest.fixture
def env_factory(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Callable[..., Env]:
    """Deployments with settings of the test's choosing (e.g. ``partitions=12``)."""

    def make(**overrides: Any) -> Env:
        return Env.create(tmp_path, broker.bootstrap, topic_prefix, **overrides)

    return make
