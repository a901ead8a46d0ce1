"""Fixtures of the audit tests: a simulated deployment (fresh, or after the bundled
scenario and two unreadable inputs), and a real one on the embedded broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from gateway.dev.broker import EmbeddedBroker
from gateway.dev.samples import scenario
from gateway.runtime import Core
from tests.audit.sim import SCENARIO, Sim


@pytest.fixture
def sim(core: Core) -> Sim:
    return Sim(core)


@pytest.fixture
def ran(sim: Sim) -> Sim:
    sim.run(*SCENARIO)
    sim.run([b"{not json", b"[1, 2]"], [b"C-1001", b"C-1002"])
    return sim


@pytest.fixture
def deployment(broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path) -> Iterator[object]:
    from tests.stream.helpers import Env, Worker

    env = Env.create(tmp_path, broker.bootstrap, topic_prefix)
    with Worker(env) as w:
        lines = [orjson.dumps(e) for e in scenario()]
        # Signed as each event type's demo publisher signs it: unsigned events are
        # dead-lettered, and the audit would expect exactly that.
        with env.publisher() as pub:
            pub.publish_many(enumerate(lines, 1))
        w.wait_processed(len(lines))
        yield env
