"""pytest plugin: one embedded Kafka broker per test session, and unique topic names.

Load it with ``pytest_plugins = ["tests.broker_plugin"]`` in the top-level conftest.py.
The broker starts on first use only, so runs that need no broker do not pay for it.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator

import pytest

from gateway.dev.broker import EmbeddedBroker

# Kafka topic names allow [a-zA-Z0-9._-] and at most 249 characters; test ids contain
# brackets and more, and the prefix must leave room for the names tests append.
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]+")
_PREFIX_STEM_MAX = 40
# One run id per session keeps names unique across runs against a long-lived broker,
# and the counter keeps them unique between tests that share a name (parametrised ones).
_RUN_ID = uuid.uuid4().hex[:6]
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A running embedded broker, shared by the whole session.

    Tests may pause() it but must resume() it before they end. Never stop() it: use your
    own EmbeddedBroker for that.
    """
    with EmbeddedBroker() as started:
        yield started


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> str:
    """A name prefix such as ``t-test_name-1a2b3c-7``, unique to this test in this session.

    It has no trailing separator: build names as ``f"{topic_prefix}.events"``. It also
    suits consumer group and faust app ids.
    """
    stem = _UNSAFE.sub("_", request.node.name).strip("_")[:_PREFIX_STEM_MAX] or "test"
    return f"t-{stem}-{_RUN_ID}-{next(_counter)}"
