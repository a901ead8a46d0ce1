"""A carrier's agent: read the shipping topic, keep each disclosure, honour erasure notices.

Copy this file to start your own agent. It needs only ``pip install disclosure-gateway``
(for ``gateway.sdk``), your private key and the gateway's public key::

    python carrier_agent.py --bootstrap localhost:9092 \\
        --key shipping.key --gateway-key gateway-signing.pub --db shipments.db

What it shows:

* **Store by disclosure id.** Delivery is at least once: after a crash or a rebalance a
  message can come again. ``INSERT OR IGNORE`` on the disclosure id makes a repeat
  harmless.
* **Handle, then move on.** The consumer commits a message's offset only after the loop
  has asked for the next one, so the database commit comes first: a crash in between
  delivers the message again instead of losing it.
* **File data under the subject key.** Every message about one customer carries the same
  key, the gateway's pseudonym of that customer *for you*. An erasure notice carries it
  too: delete everything filed under it, and record that you did (to confirm to the
  controller).
* **Let key problems stop you.** A message your keys cannot open stops the consumer with
  ``gateway.errors.KeyMismatch`` and nothing from it on is committed: fix the key, start
  again with the same group, and you receive everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import GatewayError
from gateway.sdk import AgentConsumer, AgentReader, Message

SCHEMA = """
CREATE TABLE IF NOT EXISTS shipments (
    disclosure_id TEXT PRIMARY KEY,
    subject_key   TEXT,
    order_id      TEXT,
    event_type    TEXT NOT NULL,
    payload       TEXT NOT NULL,
    received_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shipments_by_subject ON shipments (subject_key);
CREATE TABLE IF NOT EXISTS erasures (
    disclosure_id TEXT PRIMARY KEY,
    subject_key   TEXT,
    requested_at  TEXT,
    rows_deleted  INTEGER NOT NULL,
    done_at       TEXT NOT NULL
);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def handle(db: sqlite3.Connection, msg: Message) -> str:
    """Store one message; return what was done (for the log)."""
    if msg.kind == "disclosure":
        data = msg.payload.get("data", {})
        db.execute(
            "INSERT OR IGNORE INTO shipments VALUES (?, ?, ?, ?, ?, ?)",
            (
                msg.disclosure_id,
                msg.subject_key,
                data.get("order_id"),
                msg.payload.get("event_type", ""),
                json.dumps(msg.payload),
                now(),
            ),
        )
        db.commit()
        return f"stored {msg.payload.get('event_type')} {data.get('order_id')}"
    if msg.kind == "erasure_notice":
        deleted = db.execute(
            "DELETE FROM shipments WHERE subject_key = ?", (msg.subject_key,)
        ).rowcount
        db.execute(
            "INSERT OR IGNORE INTO erasures VALUES (?, ?, ?, ?, ?)",
            (msg.disclosure_id, msg.subject_key, msg.payload.get("requested_at"), deleted, now()),
        )
        db.commit()
        return f"erasure notice: deleted {deleted} shipment record(s)"
    return f"ignored a message of kind {msg.kind!r}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap address, host:port")
    p.add_argument("--key", type=Path, required=True, help="your private key")
    p.add_argument("--gateway-key", type=Path, required=True, help="the gateway's public key")
    p.add_argument("--db", type=Path, default=Path("shipments.db"))
    p.add_argument("--agent", default="shipping", help="your agent name in the policy")
    p.add_argument("--topic", help="your topic [default agent.AGENT]")
    p.add_argument("--group", help="consumer group [default agent-AGENT]")
    p.add_argument(
        "--idle-timeout", type=float, help="stop after this many idle seconds (default: never)"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("carrier")

    db = sqlite3.connect(args.db)
    db.executescript(SCHEMA)
    try:
        reader = AgentReader(args.agent, args.key, args.gateway_key)
        with AgentConsumer(
            reader,
            args.bootstrap,
            args.topic,
            group_id=args.group,
            idle_timeout=args.idle_timeout,
        ) as consumer:
            for msg in consumer:
                log.info("%s: %s", msg.disclosure_id, handle(db, msg))
        log.info("stopped: %s", consumer.stats.summary())
    except GatewayError as e:  # a key problem, or the broker cannot be reached
        log.error("error: %s", e)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
