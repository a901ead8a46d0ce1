"""Erasure notices, sent by the ledger sink when it reaches a subject's erasure request.

A worker that decides a subject's first erasure request does not notify agents itself: it
cannot know what each agent received about the subject in earlier batches, on other
workers, under earlier pseudonym periods. It writes an
:class:`~gateway.erasure.ErasureRequest` to the disclosure topic instead, after the
subject's records and under the same key, so on the same partition and in order (see
:mod:`gateway.stream.protocol`). The sink appends the records before it in the log, then
hands the request here: the subject's disclosures are read from the log, each agent that
received something gets its notice (:meth:`gateway.pipeline.Pipeline.erasure_outputs`),
and the notices are sent as everything else is -- their records first (appended to the log
by the sink itself, in the request's shard: the sink needs no right to write the
disclosure topic), then the sealed notices to the agent topics. A crash in between sends
them again under the same ids: the log and the agents recognise the duplicate.

Disclosures made outside the stream (``gateway log record-disclosure``) name recipients
that are not agents of the policy; they are not notified here (their recipients are
told by whoever made the disclosure, as the policy's own erasure procedure says).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from gateway.erasure import ErasureRequest
from gateway.ledger.query import RecordFilter, iter_records
from gateway.ledger.store import LedgerStore
from gateway.pipeline import Pipeline
from gateway.records import DecisionRecord
from gateway.stream import metrics

log = logging.getLogger("gateway.stream")

# One output message: (topic, key, value, headers); sent until the broker acknowledged it.
Item = tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]
Send = Callable[[Sequence[Item], str], Awaitable[None]]
# Appends records to the log (in the shard of the request they answer); returns once durable.
Log = Callable[[Sequence[DecisionRecord], int], Awaitable[None]]


class ErasureNotifier:
    """Builds and sends the notices for erasure requests read from the disclosure topic."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: LedgerStore,
        send: Send,
        log_records: Log,
    ):
        self.pipeline = pipeline
        self.store = store
        self.send = send
        self.log_records = log_records

    def held(self, request: ErasureRequest) -> list[DecisionRecord]:
        """The subject's records in the log, under every pseudonym period's reference."""
        flt = RecordFilter(subject_refs=tuple(request.subject_refs))
        return list(iter_records(self.store, flt))

    async def notify(self, request: ErasureRequest, shard: int) -> int:
        """Send ``request`` 's notices: their records into the log (``shard``: the
        request's partition), then the sealed notices. Returns how many agents were
        notified."""
        held = await asyncio.to_thread(self.held, request)
        out = self.pipeline.erasure_outputs(request, held)
        if out.records:
            await self.log_records(out.records, shard)
        notices: list[Item] = [
            (m.topic, m.key, m.value, [("disclosure_id", m.disclosure_id.encode())])
            for m in out.messages
        ]
        if notices:
            await self.send(notices, "erasure notices")
        for m in out.messages:
            metrics.MESSAGES_OUT.labels(m.agent, m.kind).inc()
        log.info(
            "erasure request %s: notices sent to %d agent(s)",
            request.event_id,
            len(out.messages),
        )
        return len(out.messages)
