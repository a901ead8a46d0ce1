"""Fixtures of the command-line tests: a `gateway log` ledger on SQLite or PostgreSQL, and
the bundled sample replayed once by the installed command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import SAMPLE, Env, build_log_env, gw
from tests.ledger.data import database


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with database("sqlite", tmp_path) as url:
        yield build_log_env(url, tmp_path)


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[Env]:
    with database("postgresql", tmp_path) as url:
        yield build_log_env(url, tmp_path)


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("replay")
    r = gw("replay", str(SAMPLE), "--out", "out", cwd=d)
    assert "27 events processed, 0 dead-lettered" in r.stdout
    return d
