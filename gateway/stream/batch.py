"""One batch of input events, processed at least once with log-before-disclose.

Order of effects for a batch (each step awaits the broker's acknowledgement):

1. decide every event against the consent state (a batch-local overlay of the table);
2. send every decision record to the disclosure topic, and dead letters to theirs;
3. only then send the sealed agent messages;
4. write the changed consent states to the consent changelog (acknowledged);
5. release the input events (offsets commit after this).

A crash anywhere re-delivers the batch: records and messages carry the same ids the
second time, so duplicates are recognisable and harmless, and no agent message exists
without its record. A failing send is retried with backoff, the batch held, for as long
as the broker is away.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.consent import ConsentState
from gateway.errors import EventError
from gateway.pipeline import AgentMessage, DeadLetter, Outcome, Pipeline
from gateway.records import DecisionRecord
from gateway.stream import metrics

log = logging.getLogger("gateway.stream")

Send = Callable[[str, bytes | None, bytes, list[tuple[str, bytes]] | None], Awaitable[Any]]
# (topic, key, value, headers)
Item = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]
# Sends many items at once; per item None once acknowledged, or the error.
SendMany = Callable[[Sequence[Item]], Awaitable[list[BaseException | None]]]


class InternalError(EventError):
    reason = "internal_error"


@dataclass
class Overlay(MutableMapping[str, ConsentState]):
    """Consent states for one batch: reads fall through to the table; writes stay here
    until the batch's outputs are acknowledged (then ``changes`` go to the table)."""

    load: Callable[[int, str], ConsentState | None]
    changes: dict[str, tuple[ConsentState, int]] = field(default_factory=dict)
    index: int = 0  # which event of the batch is being processed
    partition: int = 0  # and its input partition (the state's partition too)

    def __getitem__(self, key: str) -> ConsentState:
        if key in self.changes:
            return self.changes[key][0]
        got = self.load(self.partition, key)
        if got is None:
            raise KeyError(key)
        return got

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: ConsentState) -> None:
        self.changes[key] = (value, self.index)

    def __delitem__(self, key: str) -> None:  # pragma: no cover - never used
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter(self.changes)

    def __len__(self) -> int:
        return len(self.changes)


@dataclass
class BatchResult:
    outcomes: list[Outcome]
    changes: dict[str, tuple[ConsentState, int]]


class BatchProcessor:
    def __init__(self, pipeline: Pipeline, send: Send, *, disclosure_topic: str,
                 dead_letter_topic: str, retry_max_seconds: float = 5.0,
                 release_before_log: bool = False, phase_delay: float = 0.0,
                 send_many: SendMany | None = None):
        self.pipeline = pipeline
        self.send = send
        # Preferred when given: the whole phase in hand-built producer batches.
        self.send_many = send_many
        self.disclosure_topic = disclosure_topic
        self.dead_letter_topic = dead_letter_topic
        self.retry_max_seconds = retry_max_seconds
        # A deliberately broken ordering, for tests that must prove they can fail.
        self.release_before_log = release_before_log
        self.phase_delay = phase_delay

    def decide(self, raws: Sequence[bytes], partitions: Sequence[int],
               load: Callable[[int, str], ConsentState | None]) -> BatchResult:
        overlay = Overlay(load)
        outcomes = []
        for i, raw in enumerate(raws):
            overlay.index = i
            overlay.partition = partitions[i]
            try:
                out = self.pipeline.process(raw, overlay)
            except Exception as e:
                # A bug must not ack the event silently: dead-letter it with the error type
                # only (the message of an arbitrary exception could quote event data).
                log.exception("internal error processing an event (dead-lettered)")
                err = InternalError(f"internal error: {type(e).__name__}")
                out = Outcome(dead_letter=self.pipeline.dead_letter(raw, err))
            outcomes.append(out)
        return BatchResult(outcomes, overlay.changes)

    async def _send_once(self, items: list[Item]) -> list[BaseException | None]:
        if self.send_many is not None:
            return await self.send_many(items)
        futures = [await self.send(*it) for it in items]
        results = await asyncio.gather(*futures, return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    async def _send_all(self, items: list[Item]) -> None:
        """Send and wait for every acknowledgement; retry the unacknowledged with backoff
        until they are all in (duplicates on retry are recognised downstream by id)."""
        if not items:
            return
        pending = items
        delay = 0.05
        while pending:
            results = await self._send_once(pending)
            failed = [it for it, r in zip(pending, results, strict=True) if r is not None]
            if not failed:
                return
            first = next(r for r in results if r is not None)
            metrics.SEND_RETRIES.inc()
            log.warning("broker did not acknowledge %d of %d messages (%s); retrying in "
                        "%.2fs", len(failed), len(pending), type(first).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)
            pending = failed

    async def release(self, result: BatchResult) -> None:
        records: list[DecisionRecord] = []
        messages: list[AgentMessage] = []
        dead: list[DeadLetter] = []
        for out in result.outcomes:
            records.extend(out.records)
            messages.extend(out.messages)
            if out.dead_letter is not None:
                dead.append(out.dead_letter)
        logged = [(self.disclosure_topic, r.subject_ref.encode(), r.to_json(),
                   [("record_id", r.record_id.encode())]) for r in records]
        logged += [(self.dead_letter_topic, d.event_id.encode(), d.to_json(),
                    [("reason", d.reason.encode())]) for d in dead]
        released = [(m.topic, m.key, m.value, [("disclosure_id", m.disclosure_id.encode())])
                    for m in messages]
        first, second = (released, logged) if self.release_before_log else (logged, released)
        names = ("disclose", "log") if self.release_before_log else ("log", "disclose")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await self._send_all(first)  # normally the log: durable before disclosure
        t1 = loop.time()
        if self.phase_delay:
            await asyncio.sleep(self.phase_delay)
        t2 = loop.time()
        await self._send_all(second)
        metrics.BATCH_PHASE_SECONDS.labels(names[0]).observe(t1 - t0)
        metrics.BATCH_PHASE_SECONDS.labels(names[1]).observe(loop.time() - t2)
        self._count(records, messages, dead)

    @staticmethod
    def _count(records: list[DecisionRecord], messages: list[AgentMessage],
               dead: list[DeadLetter]) -> None:
        # Counted per label first: a labelled child lookup costs microseconds, and there
        # are few distinct labels per batch but thousands of outputs.
        metrics.RECORDS.inc(len(records))
        withheld = Counter((r.agent, r.reason or "") for r in records
                           if r.outcome == "withheld")
        for labels, n in withheld.items():
            metrics.WITHHELD.labels(*labels).inc(n)
        for labels, n in Counter((m.agent, m.kind) for m in messages).items():
            metrics.MESSAGES_OUT.labels(*labels).inc(n)
        for reason, n in Counter(d.reason for d in dead).items():
            metrics.DEAD_LETTERS.labels(reason).inc(n)
