"""The agent side of aggregates: an aggregate-only agent receives, per window, a message of
kind ``aggregate`` (opened like any other with :class:`~gateway.sdk.reader.AgentReader`)
whose payload is a JSON table set::

    {"aggregate": AGENT, "window": {"start", "end", "size"}, "revision": N,
     "contributing_customers": N, "late_events": N,
     "tables": [{"name", "unit", "events", "dimensions", "measures",
                 "rows": [{DIMENSION: value or null, MEASURE: value, ...}],
                 "suppressed": N}],
     "_gateway": {"disclosure_id", "ref", "purposes", "policy_version"}}

A dimension's ``null`` in a row means "all values" (a marginal or the table's total).
Suppressed cells are simply absent (``suppressed`` counts them). A window may come again
with a higher ``revision`` (late events within the grace period): it replaces the earlier
one, it does not add to it -- :class:`AggregateBook` keeps the latest revision per window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.table import Table

from gateway.sdk.reader import Received


class AggregateBook:
    """The latest revision of every window an aggregate agent received."""

    def __init__(self) -> None:
        self.windows: dict[tuple[str, str], dict[str, Any]] = {}
        self.superseded = 0

    def add(self, item: Received | dict[str, Any]) -> bool:
        """Keep ``item`` if it is a newer revision of its window; False if it is not an
        aggregate or an older (or the same) revision."""
        if isinstance(item, Received):
            if item.kind != "aggregate":
                return False
            body = item.payload
        else:
            body = item
        key = (body["window"]["start"], body["window"]["size"])
        have = self.windows.get(key)
        if have is not None and have["revision"] >= body["revision"]:
            return False
        if have is not None:
            self.superseded += 1
        self.windows[key] = body
        return True

    def extend(self, items: Iterable[Received | dict[str, Any]]) -> None:
        for item in items:
            self.add(item)

    def latest(self, size: str | None = None) -> list[dict[str, Any]]:
        """The windows (of one size, e.g. ``1h``, if given), in time order."""
        return [
            body for (start, sz), body in sorted(self.windows.items()) if size is None or sz == size
        ]


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{v:,.2f} {k}" for k, v in value.items()) or "—"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table_view(body: dict[str, Any], table: dict[str, Any]) -> Table:
    """One table of a window as a rich table (``all`` for a marginal's or total's value)."""
    w = body["window"]
    title = (
        f"{table['name']}: per {table['unit']}, {w['start']} to {w['end']} "
        f"(revision {body['revision']}; {table['suppressed']} suppressed)"
    )
    t = Table(title=title, title_justify="left")
    for d in table["dimensions"]:
        t.add_column(d)
    for m in table["measures"]:
        t.add_column(m, justify="right")
    for row in table["rows"]:
        t.add_row(
            *("all" if row[d] is None else str(row[d]) for d in table["dimensions"]),
            *(_cell(row.get(m)) for m in table["measures"]),
        )
    return t
