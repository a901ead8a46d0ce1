"""The before/after comparison in alternating bursts (gateway.dev.bench.alternate)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.dev.bench.alternate import Comparison, compare, main

ROOT = Path(__file__).resolve().parents[2]


def test_a_checkout_against_itself(capsys: pytest.CaptureFixture[str]) -> None:
    got = compare(ROOT, ROOT, events=40, rounds=3)
    assert len(got.before_us) == len(got.after_us) == 3
    assert all(0 < us < 1e6 for us in got.before_us + got.after_us)
    assert 0.2 < got.ratio < 5  # the same code: any gap is the machine's
    main(["--before", str(ROOT), "--after", str(ROOT), "--events", "20", "--rounds", "2"])
    assert "median pair ratio" in capsys.readouterr().out


def test_the_ratio_is_the_median_of_the_pairs() -> None:
    c = Comparison(10, before_us=[200.0, 90.0, 120.0], after_us=[100.0, 100.0, 100.0])
    assert c.ratio == 1.2  # pairs 2.0, 0.9, 1.2
    assert "median pair ratio 1.200 over 3 rounds of 10 events" in c.summary()


def test_a_checkout_without_the_gateway_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="is not a gateway checkout"):
        compare(tmp_path, ROOT, events=5, rounds=1)
