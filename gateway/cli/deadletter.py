"""``gateway deadletter list`` / ``show``: what the gateway rejected, from the dead-letter topic.

A dead letter says why an event was rejected and where it came from, never what it held:
its reason and error message (which name no value), the input position when the worker
recorded one, the event's size and SHA-256 digest (a publisher finds its own event by
hashing what it sent), the time, and the event's shape (field names the schemas know,
digests for others, and value types). This command shows exactly those.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.markup import escape
from rich.table import Table

from gateway.cli.common import bootstrap_option, console, require_broker, settings_from
from gateway.errors import GatewayError

_NOT_A_DEAD_LETTER = "not_a_dead_letter"


@dataclass(frozen=True)
class DeadLetterView:
    """One message of the dead-letter topic, as this command shows it."""

    id: str  # partition:offset on the dead-letter topic
    position: str  # topic[partition]@offset
    time: str
    reason: str
    error: str
    event_id: str | None
    input: str | None  # where the rejected event was read, when the worker recorded it
    size: int | None
    digest: str | None
    shape: Any

    def to_json(self, *, shape: bool = False) -> dict[str, Any]:
        out = {
            "id": self.id,
            "dead_letter": self.position,
            "time": self.time,
            "reason": self.reason,
            "error": self.error,
            "event_id": self.event_id,
            "input": self.input,
            "size": self.size,
            "digest": self.digest,
        }
        if shape:
            out["shape"] = self.shape
        return out


def _kafka_time(timestamp_ms: int) -> str:
    if timestamp_ms < 0:
        return ""
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


def _input_position(value: Any) -> str | None:
    """A dead letter's input position as ``topic[partition]@offset``: recorded as an object
    (topic, partition, offset), a list of the three, or text."""
    if isinstance(value, dict):
        value = [value.get("topic"), value.get("partition"), value.get("offset")]
    if isinstance(value, list | tuple) and len(value) == 3:
        topic, partition, offset = value
        if isinstance(partition, int) and isinstance(offset, int):
            return f"{topic}[{partition}]@{offset}" if topic else f"[{partition}]@{offset}"
    if isinstance(value, str) and value:
        return value
    return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def view(record: Any) -> DeadLetterView:
    """The view of one :class:`~gateway.kafka.read.TopicRecord` of the dead-letter topic.

    A message that is not a dead letter (not a JSON object) is shown with reason
    ``not_a_dead_letter`` and its own size and digest, never its content."""
    raw: bytes = record.value or b""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
    common = {
        "id": f"{record.partition}:{record.offset}",
        "position": record.position,
    }
    if not isinstance(doc, dict):
        return DeadLetterView(
            **common,
            time=_kafka_time(record.timestamp_ms),
            reason=_NOT_A_DEAD_LETTER,
            error="the message on the dead-letter topic is not a dead letter",
            event_id=None,
            input=None,
            size=len(raw),
            digest="sha256:" + hashlib.sha256(raw).hexdigest(),
            shape=None,
        )
    size = doc.get("size")
    return DeadLetterView(
        **common,
        time=_str_or_none(doc.get("received_at")) or _kafka_time(record.timestamp_ms),
        reason=_str_or_none(doc.get("reason")) or "?",
        error=_str_or_none(doc.get("error")) or "",
        event_id=_str_or_none(doc.get("event_id")),
        input=_input_position(doc.get("position")),
        size=size if isinstance(size, int) else None,
        digest=_str_or_none(doc.get("digest")),
        shape=doc.get("shape"),
    )


def read_dead_letters(bootstrap: str, topic: str) -> list[DeadLetterView]:
    """Every dead letter on ``topic``, oldest first."""
    from gateway.kafka.read import read_records

    records = read_records(bootstrap, topic, quiet=0.5)
    records.sort(key=lambda r: (r.timestamp_ms, r.partition, r.offset))
    return [view(r) for r in records]


def _options(f: Any) -> Any:
    f = click.option(
        "--topic", default=None, help="The dead-letter topic [env GATEWAY_DEAD_LETTER_TOPIC]."
    )(f)
    return bootstrap_option(f)


def _letters(bootstrap: str | None, topic: str | None) -> list[DeadLetterView]:
    s = settings_from(bootstrap=bootstrap, dead_letter_topic=topic)
    return read_dead_letters(require_broker(s), s.dead_letter_topic)


@click.group("deadletter")
def deadletter() -> None:
    """Read the dead-letter topic: rejected events, why, and where from (never their content)."""


@deadletter.command("list")
@_options
@click.option("--reason", "reasons", multiple=True, help="Only this reason (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
)
def list_cmd(
    bootstrap: str | None,
    topic: str | None,
    reasons: tuple[str, ...],
    limit: int | None,
    fmt: str,
) -> None:
    """List dead letters, oldest first: id, time, reason, event id, input position, size,
    digest and error."""
    letters = _letters(bootstrap, topic)
    if reasons:
        letters = [d for d in letters if d.reason in reasons]
    if limit is not None:
        letters = letters[-limit:]
    if fmt == "json":
        sys.stdout.write(orjson.dumps([d.to_json() for d in letters]).decode() + "\n")
        return
    if not letters:
        console.print("no dead letters")
        return
    table = Table(show_edge=False, pad_edge=False)
    for name in ("id", "time", "reason", "event id", "input", "size", "digest", "error"):
        table.add_column(name, overflow="fold", no_wrap=name in ("id", "size"))
    for d in letters:
        table.add_row(
            d.id,
            d.time,
            d.reason,
            escape(d.event_id or "—"),
            escape(d.input or "—"),
            "" if d.size is None else str(d.size),
            (d.digest or "")[:19],  # sha256: and 12 hex digits; `show` has all of it
            escape(d.error),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s); details: gateway deadletter show ID")


@deadletter.command("show")
@click.argument("ident", metavar="ID")
@_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
def show_cmd(ident: str, bootstrap: str | None, topic: str | None, fmt: str) -> None:
    """Show one dead letter in full (its shape included): ID is the id `list` shows
    (partition:offset), or the rejected event's id."""
    letters = _letters(bootstrap, topic)
    found = [d for d in letters if d.id == ident] or [d for d in letters if d.event_id == ident]
    if not found:
        raise GatewayError(
            f"no dead letter {ident!r} on the dead-letter topic: "
            "`gateway deadletter list` shows the ids"
        )
    if fmt == "json":
        sys.stdout.write(orjson.dumps([d.to_json(shape=True) for d in found]).decode() + "\n")
        return
    for d in found:
        rows = [
            ("dead letter", f"{d.id}  ({d.position})"),
            ("time", d.time),
            ("reason", d.reason),
            ("error", d.error),
            ("event id", d.event_id or "—"),
            ("input", d.input or "— (not recorded)"),
            ("size", "" if d.size is None else f"{d.size} bytes"),
            ("digest", d.digest or ""),
        ]
        for name, value in rows:
            console.print(f"{name:<12} {value}", markup=False)
        if d.shape is not None:
            shape = orjson.dumps(d.shape, option=orjson.OPT_INDENT_2).decode()
            console.print("shape        (field names and value types, never values)")
            console.print(shape, markup=False)
        console.print()
