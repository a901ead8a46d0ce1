"""The programs the gateway is compared with, each run as its own process
(``python -m gateway.dev.bench.baselines MODE ...``) so it has a core to itself:

``bare``
    The ceiling: a plain aiokafka consume -> produce loop that does nothing with an event
    but produce one message per event (the input value, same key) to an output topic;
    the idiomatic at-least-once form -- ``getmany``, ``send`` per message, wait for every
    acknowledgement, commit.
``bare-equal``
    The bare loop producing, for each event, as many messages as the gateway does for it
    (decision records, agent messages, dead letters, erasure requests: ~2.6 per event on
    the default mix) and of the same sizes -- each value a slice of random bytes as long as
    the gateway's output, the input's key. The counts and sizes come from the real
    pipeline over the same events, before the run (:func:`output_plan`, passed as
    ``--outputs``): per customer key, the outputs of each of its events in order (a
    customer's events keep their order on one partition). What the gateway writes per
    batch rather than per event (consent changelog, aggregate partials, markers) is not
    included. The ceiling for the same output volume, where ``bare`` is the ceiling for
    one output per event.
``bare-batch``
    The same loop with hand-built producer batches (``create_batch``/``send_batch``): how
    fast the client can go at all. For context only; the targets use ``bare``.
``faust-per-event``
    What a user would write by hand with faust: ``async for value in stream``, the same
    ``Pipeline.process`` per event, and ``await topic.send()`` per output, records before
    agent messages. Consent state lives in a dict (faust tables cannot restore against
    Tansu), and the records are not awaited before the agent messages go out -- both in
    the baseline's favour: the gateway waits for the log to be durable first.
``faust-noop``
    faust's own per-event cost: a ``noack_take`` agent that only acknowledges.

Each writes a JSON result (events, seconds from the first event in to the last output
acknowledged, events/s) to ``--result`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gateway.kafka.clients import AIOKAFKA_CONSUMER_DEFAULTS, AIOKAFKA_PRODUCER_DEFAULTS

if TYPE_CHECKING:
    from gateway.runtime import Core


def _write(path: Path, events: int, first: float, last: float, **more: Any) -> None:
    seconds = max(last - first, 1e-9)
    path.write_bytes(
        orjson.dumps(
            {"events": events, "seconds": seconds, "events_per_s": events / seconds, **more}
        )
    )


# --- the bare aiokafka loop ---------------------------------------------------------------


def output_plan(core: Core, items: Iterable[tuple[bytes, bytes]]) -> dict[str, Any]:
    """What the gateway produces for each of ``items`` ((key, value) in publishing order),
    as the offline pipeline decides it with one consent state per customer: per customer
    key (text), for each of its events in order, the value sizes of its outputs -- decision
    records and erasure requests (as logged), agent messages, dead letters. With totals,
    for the report: ``outputs_per_event`` is the gateway's fan-out on this input."""
    pipeline = core.pipeline
    states: dict[str, Any] = {}
    per_key: dict[str, list[list[int]]] = {}
    events = outputs = size = 0
    for key, value in items:
        out = pipeline.process(value, states, verify=False)
        sizes = [len(r.to_json()) for r in out.records]
        if out.erasure_request is not None:
            sizes.append(len(out.erasure_request.to_json()))
        sizes += [len(m.value) for m in out.messages]
        if out.dead_letter is not None:
            sizes.append(len(out.dead_letter.to_json()))
        per_key.setdefault(key.decode(), []).append(sizes)
        events += 1
        outputs += len(sizes)
        size += sum(sizes)
    return {
        "events": events,
        "outputs": outputs,
        "outputs_per_event": outputs / max(events, 1),
        "avg_output_bytes": size / max(outputs, 1),
        "per_key": per_key,
    }


async def bare_loop(
    bootstrap: str,
    input_topic: str,
    output_topic: str,
    events: int,
    group: str,
    result: Path,
    *,
    batched: bool = False,
    plan: Path | None = None,
) -> None:
    """``plan``: an :func:`output_plan` file -- then each event is answered with the
    gateway's outputs for it (``bare-equal``) instead of one copy of itself."""
    queues: dict[bytes, deque[list[int]]] = {}
    blobs: dict[int, bytes] = {}
    if plan is not None:
        doc = orjson.loads(plan.read_bytes())
        queues = {k.encode(): deque(v) for k, v in doc["per_key"].items()}
        sizes = {s for q in queues.values() for outs in q for s in outs}
        noise = random.Random(0).randbytes(max(sizes, default=0))  # incompressible
        blobs = {s: noise[:s] for s in sizes}
    unplanned = 0  # events not in the plan (none expected): answered with no output
    consumer = AIOKafkaConsumer(
        input_topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **AIOKAFKA_CONSUMER_DEFAULTS,
    )
    # acks=all, as the gateway's producer: an output counts once the broker has it.
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", **AIOKAFKA_PRODUCER_DEFAULTS
    )
    await producer.start()
    await consumer.start()
    n = 0
    first = 0.0
    try:
        while n < events:
            fetched = await consumer.getmany(timeout_ms=1000)
            if not fetched:
                continue
            if not n:
                first = time.monotonic()
            futures = []
            for tp, records in fetched.items():
                if batched:
                    batch = producer.create_batch()
                    for r in records:
                        if batch.append(key=r.key, value=r.value, timestamp=None) is None:
                            batch.close()
                            futures.append(
                                await producer.send_batch(
                                    batch, output_topic, partition=tp.partition
                                )
                            )
                            batch = producer.create_batch()
                            batch.append(key=r.key, value=r.value, timestamp=None)
                    batch.close()
                    futures.append(
                        await producer.send_batch(batch, output_topic, partition=tp.partition)
                    )
                elif plan is not None:
                    for r in records:
                        q = queues.get(r.key) if r.key is not None else None
                        if not q:
                            unplanned += 1
                            continue
                        for size in q.popleft():
                            futures.append(
                                await producer.send(output_topic, blobs[size], key=r.key)
                            )
                else:
                    for r in records:
                        futures.append(await producer.send(output_topic, r.value, key=r.key))
                n += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        more = {"unplanned": unplanned} if plan is not None else {}
        _write(result, n, first, time.monotonic(), **more)
    finally:
        await consumer.stop()
        await producer.stop()


# --- faust --------------------------------------------------------------------------------


def _faust_app(app_id: str, bootstrap: str, partitions: int) -> Any:
    import faust

    return faust.App(
        app_id,
        broker=[f"kafka://{h}" for h in bootstrap.split(",")],
        store="memory://",
        autodiscover=False,
        topic_partitions=partitions,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        stream_wait_empty=False,
        web_enabled=False,
        logging_config=None,
    )


def _run_faust(app: Any) -> None:
    import faust

    # "info", as `gateway run` defaults to: at "warning" and above faust's worker installs
    # a terminal spinner that sets the root logger to DEBUG, and every debug call in
    # aiokafka and faust then builds a log record (measured: ~6 % of a worker's time).
    faust.Worker(app, loglevel="info", quiet=True, override_logging=True).execute_from_commandline()


def faust_per_event(events: int, result: Path) -> None:
    from gateway.consent import ConsentState
    from gateway.runtime import build_core
    from gateway.settings import Settings

    settings = Settings()
    core = build_core(settings)
    pipeline = core.pipeline
    app = _faust_app(settings.app_id, settings.bootstrap_servers, settings.partitions)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(settings.input_topic, key_type=bytes, value_type=bytes, **raw)
    disclosures = app.topic(settings.disclosure_topic, **raw)
    dead = app.topic(settings.dead_letter_topic, **raw)
    agent_topics = {a.topic: app.topic(a.topic, **raw) for a in core.policy.agents.values()}
    states: dict[str, ConsentState] = {}
    done = {"n": 0, "first": 0.0}

    @app.agent(source, name="per-event")
    async def per_event(stream: Any) -> None:
        async for value in stream:
            if not done["n"]:
                done["first"] = time.monotonic()
            out = pipeline.process(value, states, verify=False)
            for rec in out.records:  # log, then disclose
                await disclosures.send(
                    key=rec.subject_ref.encode(),
                    value=rec.to_json(),
                    headers=[("record_id", rec.record_id.encode())],
                )
            if out.dead_letter is not None:
                d = out.dead_letter
                await dead.send(
                    key=d.event_id.encode(),
                    value=d.to_json(),
                    headers=[("reason", d.reason.encode())],
                )
            for m in out.messages:
                await agent_topics[m.topic].send(
                    key=m.key, value=m.value, headers=[("disclosure_id", m.key)]
                )
            done["n"] += 1
            if done["n"] >= events:
                await app.producer.flush()  # every output acknowledged
                _write(result, int(done["n"]), done["first"], time.monotonic())
                os._exit(0)

    _run_faust(app)


def faust_noop(
    bootstrap: str, input_topic: str, events: int, group: str, partitions: int, result: Path
) -> None:
    app = _faust_app(group, bootstrap, partitions)
    source = app.topic(
        input_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    done = {"n": 0, "first": 0.0}

    @app.agent(source, name="noop")
    async def noop(stream: Any) -> None:
        async for batch in stream.noack_take(500, within=0.005):
            if not done["n"]:
                done["first"] = time.monotonic()
            for e in batch:
                await stream.ack(e)
            done["n"] += len(batch)
            if done["n"] >= events:
                _write(result, int(done["n"]), done["first"], time.monotonic())
                os._exit(0)

    _run_faust(app)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gateway.dev.bench.baselines")
    ap.add_argument(
        "mode", choices=["bare", "bare-equal", "bare-batch", "faust-per-event", "faust-noop"]
    )
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--input", default="")
    ap.add_argument("--output", default="")
    ap.add_argument("--group", default="")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--result", type=Path, required=True)
    ap.add_argument("--outputs", type=Path, default=None, help="bare-equal: output_plan file")
    a = ap.parse_args(argv)
    if a.mode in ("bare", "bare-equal", "bare-batch"):
        if a.mode == "bare-equal" and a.outputs is None:
            ap.error("bare-equal needs --outputs")
        asyncio.run(
            bare_loop(
                a.bootstrap,
                a.input,
                a.output,
                a.events,
                a.group,
                a.result,
                batched=a.mode == "bare-batch",
                plan=a.outputs if a.mode == "bare-equal" else None,
            )
        )
    elif a.mode == "faust-per-event":
        # faust's worker parses sys.argv itself: leave it nothing to misread.
        sys.argv = sys.argv[:1]
        faust_per_event(a.events, a.result)
    else:
        sys.argv = sys.argv[:1]
        faust_noop(a.bootstrap, a.input, a.events, a.group, a.partitions, a.result)


if __name__ == "__main__":
    main()
