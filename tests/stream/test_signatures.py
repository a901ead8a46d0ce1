"""The signature checks a worker makes ahead of deciding a batch, on its threads."""

from __future__ import annotations

import threading

import orjson
import pytest

from gateway.dev.samples import random_events
from gateway.pipeline import SignatureCheck
from gateway.publishers import Publisher
from gateway.runtime import Core, demo_signers
from gateway.settings import Settings
from gateway.stream.signatures import MIN_PARALLEL, SignatureChecks


def items(core: Core, settings: Settings, n: int) -> list[tuple[bytes, list[tuple[str, bytes]]]]:
    signers = demo_signers(settings, core.policy)
    out = []
    for i, ev in enumerate(random_events(n, seed=3, customers=20)):
        raw = orjson.dumps(ev)
        headers = signers[ev["event_type"]].headers(raw)
        if i % 4 == 3:
            raw = raw + b" "  # altered after signing
        out.append((raw, headers))
    return out


def said(found: SignatureCheck | None) -> str:
    """The publisher a check found, or the reason it refused the event."""
    if isinstance(found, Publisher):
        return found.name
    return "none" if found is None else found.reason


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_each_result_is_its_own_events_in_order(
    core: Core, settings: Settings, threads: int
) -> None:
    batch = items(core, settings, 3 * MIN_PARALLEL + 1)  # shares of unequal sizes
    checks = SignatureChecks(core.pipeline, threads)
    try:
        got = checks.check(batch)
    finally:
        checks.close()
    want: list[SignatureCheck | None] = [core.pipeline.check_signature(v, h) for v, h in batch]
    assert [said(g) for g in got] == [said(w) for w in want]
    assert sum(not isinstance(g, Publisher) for g in got) == len(batch) // 4


def test_checks_run_on_the_pool_threads_only_for_a_batch_worth_it(
    core: Core, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: set[str] = set()
    real = core.pipeline.check_signature

    def spy(value: bytes, headers: object) -> SignatureCheck | None:
        seen.add(threading.current_thread().name)
        return real(value, headers)

    monkeypatch.setattr(core.pipeline, "check_signature", spy)
    checks = SignatureChecks(core.pipeline, 2)
    try:
        checks.check(items(core, settings, MIN_PARALLEL - 1))
        assert seen == {threading.current_thread().name}  # small: on the caller's thread
        seen.clear()
        checks.check(items(core, settings, 2 * MIN_PARALLEL))
        assert seen and all(name.startswith("gateway-signatures") for name in seen)
    finally:
        checks.close()


def test_at_least_one_thread(core: Core) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SignatureChecks(core.pipeline, 0)
