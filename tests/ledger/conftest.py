"""Fixtures of the ledger tests: each test runs on SQLite and on a real PostgreSQL (a fresh
schema per test, dropped after), with a fresh gateway signing key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.crypto import SigningKey
from tests.ledger.data import database

BACKENDS = [pytest.param("sqlite"), pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ledger database on each back end."""
    with database(request.param, tmp_path) as u:
        yield u


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()
