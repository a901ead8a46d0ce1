"""The batch lane's fetch wait: short while fetches bring data, the idle wait after one
that brought none."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.stream.lane import wait_less_while_busy


class FakeFetcher:
    """aiokafka's fetcher as the lane's hook sees it: the wait it puts in each fetch
    request, and the fetch itself (True: it brought data)."""

    def __init__(self, results: list[bool]):
        self._fetch_max_wait_ms = 25
        self.results = results
        self.waits: list[int] = []

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        self.waits.append(self._fetch_max_wait_ms)
        return self.results.pop(0)


def test_a_fetch_after_one_that_brought_data_waits_less() -> None:
    fetcher = FakeFetcher([True, True, False, False, True, False])
    wait_less_while_busy(fetcher, idle_ms=25, busy_ms=5)

    async def fetch_all() -> None:
        while fetcher.results:
            await fetcher._proc_fetch_request(None, 0, None)

    asyncio.run(fetch_all())
    assert fetcher.waits == [25, 5, 5, 25, 25, 5]
    assert fetcher._fetch_max_wait_ms == 25  # the last one brought nothing: idle again


def test_the_busy_wait_is_never_longer_than_the_idle_wait() -> None:
    fetcher = FakeFetcher([True, True])
    wait_less_while_busy(fetcher, idle_ms=2, busy_ms=5)

    async def fetch_all() -> None:
        while fetcher.results:
            await fetcher._proc_fetch_request(None, 0, None)

    asyncio.run(fetch_all())
    assert fetcher.waits == [25, 2]
