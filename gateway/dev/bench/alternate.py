"""Two checkouts' cores, compared in alternating bursts: a before/after figure that holds on
a machine whose speed swings by more than the change measured.

Each checkout runs in its own process (its own ``PYTHONPATH``), builds the bench's core
deployment and events exactly as the ``core`` phase does, warms up, and then processes the
same events once each time it is told to. The driver tells the two in turn, swapping who
goes first every round, and keeps the ratio of each adjacent pair: both sides of a pair
see the same minute of the machine. The median of those ratios is the figure; the medians
and minimums per side are given for context::

    python -m gateway.dev.bench.alternate --before ../gateway-before --after . \\
        --events 2000 --rounds 30

``--before`` and ``--after`` are checkouts (a ``git worktree`` of the old commit keeps the
old code runnable next to the new). The child's code is passed in full and uses only
what every checkout since the bench's core phase has (``Workspace``, ``event_items``,
``random_events``, ``Pipeline.process``), so an old commit needs nothing added.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Run in each checkout: build the core, warm it, then one pass over the events per line read
# from stdin, its seconds printed back.
CHILD = """
import sys, tempfile, time
from pathlib import Path
import gateway
from gateway.dev.bench.infra import Workspace, event_items
from gateway.dev.samples import random_events
n, seed = int(sys.argv[1]), int(sys.argv[2])
ws = Workspace(Path(tempfile.mkdtemp()), "127.0.0.1:1")
pipeline = ws.deployment("core", input_topic="in", partitions=4).core.pipeline
raws = [v for _, v in event_items(random_events(n, seed=seed, customers=1000))]
def once():
    states = {}
    for raw in raws:
        pipeline.process(raw, states, verify=False)
once(); once()
print("ready", gateway.__file__, flush=True)
for _ in sys.stdin:
    t = time.perf_counter(); once(); print(time.perf_counter() - t, flush=True)
"""


@dataclass
class Comparison:
    events: int
    before_us: list[float]  # µs per event, one per round
    after_us: list[float]

    @property
    def ratio(self) -> float:
        """Median over the rounds of before ÷ after (above 1: the after checkout is faster)."""
        return statistics.median(b / a for b, a in zip(self.before_us, self.after_us, strict=True))

    def summary(self) -> str:
        med, low = statistics.median, min
        return (
            f"before: median {med(self.before_us):.1f} µs/event (min {low(self.before_us):.1f}); "
            f"after: median {med(self.after_us):.1f} (min {low(self.after_us):.1f}); "
            f"median pair ratio {self.ratio:.3f} over {len(self.before_us)} rounds "
            f"of {self.events} events"
        )


class _Child:
    def __init__(self, checkout: Path, events: int, seed: int):
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(events), str(seed)],
            cwd=checkout,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        # The installed package answers an import when the checkout has none: make sure
        # that what runs is the checkout's own code.
        ready, _, where = self._line().partition(" ")
        if ready != "ready" or not Path(where).resolve().is_relative_to(checkout.resolve()):
            self.close()
            raise RuntimeError(
                f"{checkout} is not a gateway checkout (its core did not start, or the gateway "
                f"package came from {where or 'elsewhere'}): give the directory holding "
                "gateway/ of the code to compare"
            )

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a compared core exited early")
        return line.strip()

    def once(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self._line())

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def compare(
    before: Path, after: Path, *, events: int = 2000, rounds: int = 30, seed: int = 1
) -> Comparison:
    """Alternate ``rounds`` passes of each checkout's core over the same ``events``."""
    a = _Child(before, events, seed)
    try:
        b = _Child(after, events, seed)
        try:
            out = Comparison(events, [], [])
            for i in range(rounds):
                if i % 2 == 0:
                    tb, ta = a.once(), b.once()
                else:
                    ta, tb = b.once(), a.once()
                out.before_us.append(tb / events * 1e6)
                out.after_us.append(ta / events * 1e6)
            return out
        finally:
            b.close()
    finally:
        a.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m gateway.dev.bench.alternate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--before", type=Path, required=True, help="checkout of the old code")
    p.add_argument("--after", type=Path, default=Path("."), help="checkout of the new code")
    p.add_argument("--events", type=int, default=2000, help="events per pass")
    p.add_argument("--rounds", type=int, default=30, help="passes of each")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    got = compare(args.before, args.after, events=args.events, rounds=args.rounds, seed=args.seed)
    print(got.summary())


if __name__ == "__main__":
    main()
