"""A gateway worker with a deliberately faulty batch protocol, for the fault tests.

    python -m tests.stream.faulty_worker --role gateway [--disclose-before-log]
        [--pause-ms N] [--pause-marker PATH]

Configured like ``gateway run`` (``GATEWAY_*`` variables). The faults exist only here, in
the tests, so no production setting can switch them on:

* ``--disclose-before-log`` sends a batch's agent messages before its records: a crash
  between the two leaves messages no record describes (the ordering the chaos test must
  be able to catch);
* ``--pause-ms`` pauses between the two publishing steps, so a kill can land between them;
* ``--pause-marker PATH`` creates the file PATH while the worker is in that pause, so a
  test can kill it exactly there (not by luck: a random kill can miss the window).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway.settings import Settings
from gateway.stream.protocol import BatchProtocol, Decided
from gateway.stream.worker import run

log = logging.getLogger("gateway.stream")

# Announced in the worker's log, which the chaos test checks.
DISCLOSE_BEFORE_LOG_WARNING = (
    "UNSAFE_RELEASE_BEFORE_LOG: agent messages are disclosed BEFORE their records are "
    "logged (a faulty test worker; never in production)"
)


def faulty_protocol(
    *, disclose_before_log: bool, pause: float, marker: Path | None = None
) -> type[BatchProtocol[Any]]:
    """The batch protocol with its publishing steps reordered and/or paused."""

    class FaultyProtocol(BatchProtocol[Any]):
        async def publish(self, batch: Decided[Any]) -> None:
            first, second = (
                (self.disclose, self.log) if disclose_before_log else (self.log, self.disclose)
            )
            await first(batch)
            # The marker says "messages are out, records are not" (or the reverse): only
            # for batches that disclose something.
            discloses = any(o.messages for o in batch.outcomes)
            if pause:
                if marker is not None and discloses:
                    marker.write_text(str(len(batch.outcomes)))
                await asyncio.sleep(pause)
                if marker is not None:
                    marker.unlink(missing_ok=True)
            await second(batch)

    return FaultyProtocol


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.stream.faulty_worker")
    parser.add_argument("--role", choices=["all", "gateway", "ledger"], default="all")
    parser.add_argument("--disclose-before-log", action="store_true")
    parser.add_argument("--pause-ms", type=int, default=0)
    parser.add_argument("--pause-marker", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.disclose_before_log:
        log.warning(DISCLOSE_BEFORE_LOG_WARNING)
    protocol = faulty_protocol(
        disclose_before_log=args.disclose_before_log,
        pause=args.pause_ms / 1000,
        marker=args.pause_marker,
    )
    run(Settings(), args.role, protocol=protocol)


if __name__ == "__main__":
    main()
