"""Aggregate-only agents: windowed statistics with small-cell suppression.

An agent of ``kind: aggregate`` (see :class:`gateway.policy.AggregateSpec`) never receives
an event. For each event it subscribes to, the engine decides as for any agent -- the
subject's consent state, the purposes, the category rules, the sensitive opt-in -- and the
permitted view of the event becomes a :class:`Contribution`: per declared table, the rows
(dimension values, additive measures) the event adds. Dimensions are derived from what the
engine let through (an Rx line whose SKU and description were removed counts in no product
category), so consent and redaction apply *before* aggregation.

Protocol (what the stream worker and the offline replay both do; :class:`AggregateSet` is
the in-process version, the replay's):

1. ``Pipeline.decide`` returns, in ``EventResult.contributions``, one contribution per
   aggregate agent that got one (its per-event record has outcome ``contributed``; no
   message is sealed for it). A duplicate the pipeline recognised has none.
2. Each *subject partition* keeps one :class:`Aggregator` per aggregate agent, with the
   partition's consent states and duplicate cache (same lifetime, same changelog).
   ``add(c)`` returns the partials it changed (empty: a redelivered event, skipped by its
   ``event_key`` while its window is open). An event later than its window's end + grace
   -- by the partition's own watermark, the latest ``occurred_at`` it has seen -- is not
   added; it is counted as ``late`` in the window open at the watermark (and returned).
   ``advance(occurred_at)`` for EVERY event the partition decides (not only
   contributions) moves the watermark.
3. ``Aggregator.partials()`` are the open windows as plain JSON-able data
   (:meth:`Partial.to_json` / :meth:`Partial.from_json`, each stamped with the partition's
   watermark): persist them in the changelog with the batch's consent states, and
   ``Aggregator.restore(partials)`` after a crash or a rebalance, before the redelivered
   events. ``Aggregator.expire()`` drops windows past end + grace (their last partial
   must have been handed on already).
4. A :class:`Combiner` per agent (where the partitions' partials meet; one place for all
   partitions, e.g. one partition of a keyed-by-agent topic) takes ``update(partial)`` --
   the latest snapshot per (window, partition) wins by ``(seq, late)``, so re-sending a
   partial is harmless -- and ``heartbeat(partition, watermark)`` for a partition with
   events but no partial to send. Its watermark is the LOWEST of all ``partitions``
   partitions' watermarks, so a window ends (is emitted) when every partition is past
   its end, and closes when every partition is past end + grace: then no partition can
   add to it any more, and a closed window is never reopened. ``due()`` combines the
   partitions of every ended window that changed since it was last emitted, THEN applies
   the threshold and complementary suppression, and returns :class:`AggregateTable` s
   with revision 0, 1, 2... per window. ``due(final=True)`` closes every window (end of
   input). A window with fewer than k contributing customers is not emitted at all.
5. :func:`emit` seals a table for the agent (kind ``aggregate``) and builds its
   ``aggregated`` decision record: log the record first, then publish the message, as for
   every disclosure. Same table, same record id (content-addressed).

Why partials are per partition and "latest wins" rather than a set of event ids per cell:
a customer lives on exactly one subject partition (``gateway.routing``), so partitions'
contributions are disjoint and add up; within a partition, the aggregator's own set of
event keys per open window makes ``add`` idempotent, and a partial restored from the
changelog carries that set. Keeping per-cell event sets would cost memory per cell for
nothing the partition set does not already give. Distinct customers are kept as sets of
keyed subject digests per cell (exact; never emitted) and combined by union.

The offline replay drives exactly these classes with the same partition count and the
same routing, so the final revision of every window equals the stream's. (Intermediate
revisions depend on when partials reach the combiner; the final one does not.)

Suppression (:func:`suppress`): a table has 1 or 2 dimensions; what is published is every
cell, every marginal (a row's or column's total) and the table total, each with its own
distinct-customer count. An entry from fewer than ``k`` distinct customers is suppressed
(primary). Complementary suppression then repeats until stable: (a) in every linear
relation the table publishes (a marginal is the sum of its line; the total is the sum of
the marginals), if exactly one entry is suppressed, the smallest published one beside it
is suppressed too; (b) an exact audit solves the linear system an attacker has (the
suppressed entries as unknowns, the published ones as constants) by Gaussian elimination
over the rationals, and any suppressed entry the system determines gets its smallest
published partner suppressed. Counts and sums are additive, so one audit covers them all
(a cell is published or suppressed with all its measures). Windows inside windows: a
longer window's cell is the sum of the same cell in the shorter windows inside it (an
hour is twelve 5-minute windows), so the longer window's audit takes in what each shorter
one released (published values as constants, suppressed entries as unknowns, and their
own relations); only the longer window's entries can still be hidden, the shorter ones
being out already. The :class:`Combiner` keeps what each window released for that.

Not covered (known, documented limits): bounds an attacker derives from non-negativity
(interval disclosure); differencing two revisions of one window (a revision differs from
the previous one by the late events since, so a cell changed by one customer's late event
reveals that event's measures -- keep the grace short, or add noise); the dominance of
one customer in a sum (a published order total may be mostly one order); tables of one
window share only the window's totals, which every table states the same way. No noise is
added (the issue's optional Laplace noise is not implemented).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from gateway.memo import short_string_memo

if TYPE_CHECKING:
    from gateway.pipeline import AgentMessage, Pipeline
    from gateway.policy import AggregateSpec, Policy
    from gateway.records import DecisionRecord

# --- vocabulary ------------------------------------------------------------------------

# Dimension -> (event types it is derived for, source categories, what it is).
DIMENSIONS: dict[str, tuple[frozenset[str], tuple[str, ...], str]] = {
    "page": (
        frozenset({"site.visit"}),
        ("user.behavior.browsing_history",),
        "page path visited (without query string)",
    ),
    "referrer_domain": (
        frozenset({"site.visit"}),
        ("user.behavior.browsing_history",),
        "referring site's host name, '(none)' when absent or withheld",
    ),
    "device_class": (
        frozenset({"site.visit"}),
        ("user.device.user_agent",),
        "desktop, mobile, tablet or bot, from the user agent",
    ),
    "browser_family": (
        frozenset({"site.visit"}),
        ("user.device.user_agent",),
        "Chrome, Safari, Firefox, Edge or Other, from the user agent",
    ),
    "language": (
        frozenset({"site.visit"}),
        ("user.demographic.language",),
        "the browser's primary language subtag (en, es, ...)",
    ),
    "country": (
        frozenset({"order.placed"}),
        ("user.contact.address.country",),
        "shipping country",
    ),
    "state": (
        frozenset({"order.placed"}),
        ("user.contact.address.state",),
        "shipping state",
    ),
    "zip3": (
        frozenset({"order.placed"}),
        ("user.contact.address.postal_code",),
        "first three digits of the shipping ZIP code",
    ),
    "product_category": (
        frozenset({"order.placed"}),
        ("user.behavior.purchase_history.item_description",),
        "frames, lenses, contact lenses, sunglasses, accessories or other, per order line",
    ),
    "hour": (
        frozenset({"site.visit", "order.placed"}),
        ("system.operations",),
        "hour of day (UTC) the event occurred",
    ),
}

# Measures: count (units: visits, page views, orders or order lines), distinct customers,
# and sums. Sums are exact integers (cents, seconds, pieces): addition in any order gives
# the same result, so partitions and replay agree to the last digit.
MEASURES: dict[str, tuple[frozenset[str], str]] = {
    "count": (frozenset({"site.visit", "order.placed"}), "number of units"),
    "customers": (frozenset({"site.visit", "order.placed"}), "distinct customers"),
    "order_total": (frozenset({"order.placed"}), "sum of order totals, per currency"),
    "revenue": (frozenset({"order.placed"}), "sum of line quantity x unit price, per currency"),
    "quantity": (frozenset({"order.placed"}), "sum of line quantities"),
    "duration_s": (frozenset({"site.visit"}), "sum of visit durations in seconds"),
}

# Names that are, or carry, a direct identifier: never a dimension (`policy check`).
DIRECT_IDENTIFIERS = frozenset(
    {
        "customer_id",
        "customer",
        "subject",
        "pseudonym",
        "session_id",
        "session",
        "cookie_id",
        "ip",
        "ip_address",
        "email",
        "phone",
        "name",
        "order_id",
        "order_number",
        "device_id",
        "street",
        "postal_code",
        "zip",
        "zip5",
        "location",
        "lat",
        "lon",
        "user_agent",
        "occurred_at",
        "timestamp",
        "minute",
        "second",
        "event_id",
    }
)

MULTI_VALUED = {"page": "page view", "product_category": "order line"}
ALL = None  # a marginal's value for the dimension it sums over

_DURATION_RE = re.compile(r"^([1-9][0-9]{0,3})([smhd])$")


def parse_window(text: str) -> timedelta:
    """``5m``, ``1h``, ``1d``... as a duration (s, m, h or d)."""
    m = _DURATION_RE.match(text)
    if m is None:
        raise ValueError("a window or grace is a number and a unit: s, m, h or d (e.g. 5m, 1h)")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(seconds=n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def table_unit(dimensions: Iterable[str], events: Iterable[str]) -> str:
    """What one count of a table counts."""
    for d in dimensions:
        if d in MULTI_VALUED:
            return MULTI_VALUED[d]
    evs = set(events)
    if evs == {"site.visit"}:
        return "visit"
    if evs == {"order.placed"}:
        return "order"
    return "event"


# --- deriving a contribution -----------------------------------------------------------

_PRODUCT_WORDS = (
    ("contact lenses", ("contact lens", "contacts", "daily disposable")),
    ("sunglasses", ("sunglass", "polarized", "polarised")),
    ("frames", ("frame",)),
    ("lenses", ("lens", "blank")),
    ("accessories", ("case", "cloth", "cleaner", "spray", "strap", "chain")),
)


# User agents, referrers and a catalogue's descriptions recur event after event: the
# classifiers below remember their answers for short strings.
_memo = short_string_memo(length=512, count=4096)


@_memo
def product_category(description: str) -> str:
    text = description.lower()
    for category, words in _PRODUCT_WORDS:
        if any(w in text for w in words):
            return category
    return "other"


@_memo
def device_class(user_agent: str) -> str:
    ua = user_agent.lower()
    if any(w in ua for w in ("bot", "crawler", "spider", "headless")):
        return "bot"
    if "ipad" in ua or "tablet" in ua:
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


@_memo
def browser_family(user_agent: str) -> str:
    ua = user_agent.lower()
    if "edg/" in ua or "edge/" in ua:
        return "Edge"
    if "firefox/" in ua or "fxios/" in ua:
        return "Firefox"
    if "chrome/" in ua or "crios/" in ua or "chromium/" in ua:
        return "Chrome"
    if "safari/" in ua:
        return "Safari"
    return "Other"


@_memo
def _host(referrer: str) -> str:
    try:
        host = urlsplit(referrer).hostname or ""
    except ValueError:
        return "(none)"
    host = host.lower().removeprefix("www.")
    return host or "(none)"


def referrer_domain(referrer: Any) -> str:
    if not isinstance(referrer, str) or not referrer:
        return "(none)"
    return _host(referrer)


def page_path(page: Any) -> str:
    if not isinstance(page, str):
        return "(unknown)"
    path = page.split("?", 1)[0].split("#", 1)[0]
    return path[:200] or "/"


def _cents(value: Any) -> int:
    return round(float(value) * 100)


def _dimension_values(
    name: str, event_type: str, data: Mapping[str, Any], hour: str
) -> list[str] | None:
    """The value(s) of dimension ``name`` in a (redacted) event, None if not derivable."""
    if name == "hour":
        return [hour]
    if name == "page":
        return [page_path(p) for p in data.get("pages") or []]
    if name == "referrer_domain":
        return [referrer_domain(data.get("referrer"))]
    if name in ("device_class", "browser_family", "language"):
        device = data.get("device") or {}
        if name == "language":
            lang = device.get("language")
            if not isinstance(lang, str) or not lang:
                return ["(unknown)"]
            return [lang.split("-", 1)[0].split("_", 1)[0].lower()[:8]]
        ua = device.get("user_agent")
        if not isinstance(ua, str):
            return ["(unknown)"]
        return [device_class(ua) if name == "device_class" else browser_family(ua)]
    if name in ("country", "state", "zip3"):
        address = data.get("shipping_address") or {}
        key = {"country": "country", "state": "state", "zip3": "postal_code"}[name]
        value = address.get(key)
        if not isinstance(value, str) or not value:
            return ["(unknown)"]
        if name == "zip3" and (len(value) != 3 or not value.isdigit()):
            # Only a ZIP the engine generalised to three digits: never a full postal code.
            return ["(unknown)"]
        return [value.upper() if name != "zip3" else value]
    return None


@dataclass(frozen=True, slots=True)
class _TablePlan:
    """What :func:`derive_rows` needs of one table, read from its spec once."""

    name: str
    dimensions: tuple[str, ...]
    others: tuple[str, ...]  # the dimensions besides product_category
    per_line: bool  # one row per order line (a product_category table)
    quantity: bool
    revenue: bool
    order_total: bool
    duration_s: bool
    per_page: bool  # sums are per visit, not per page: a page table's rows carry none


# (id of the spec, event type) -> (the spec, its tables covering the type, the dimensions
# they need besides product_category). The spec is held, so its id is not reused while
# cached; a policy has a handful of specs.
_TABLE_PLANS: dict[
    tuple[int, str], tuple[AggregateSpec, tuple[_TablePlan, ...], tuple[str, ...]]
] = {}


def _table_plans(
    spec: AggregateSpec, event_type: str
) -> tuple[tuple[_TablePlan, ...], tuple[str, ...]]:
    got = _TABLE_PLANS.get((id(spec), event_type))
    if got is not None and got[0] is spec:
        return got[1], got[2]
    plans = tuple(
        _TablePlan(
            name=tname,
            dimensions=tuple(table.dimensions),
            others=tuple(d for d in table.dimensions if d != "product_category"),
            per_line="product_category" in table.dimensions,
            quantity="quantity" in table.measures,
            revenue="revenue" in table.measures,
            order_total="order_total" in table.measures,
            duration_s="duration_s" in table.measures,
            per_page="page" in table.dimensions,
        )
        for tname, table in spec.tables.items()
        if event_type in table.events
    )
    needed = tuple(dict.fromkeys(d for plan in plans for d in plan.others))
    if len(_TABLE_PLANS) >= 1024:
        _TABLE_PLANS.clear()
    _TABLE_PLANS[(id(spec), event_type)] = (spec, plans, needed)
    return plans, needed


def derive_rows(
    spec: AggregateSpec, event_type: str, payload: Mapping[str, Any]
) -> dict[str, list[tuple[tuple[str, ...], dict[str, int]]]]:
    """Per table of ``spec`` that covers ``event_type``: the rows the event adds, each
    (dimension values, sums). ``payload`` is the engine's redacted view of the event (its
    ``occurred_at`` cut to the agent's timestamp precision: the hour dimension reads it).
    Rows of one table may share their sums (read-only)."""
    data = payload.get("data") or {}
    at = payload.get("occurred_at")
    hour = at[11:13] if isinstance(at, str) and len(at) >= 13 else "(unknown)"
    out: dict[str, list[tuple[tuple[str, ...], dict[str, int]]]] = {}
    plans, needed = _table_plans(spec, event_type)
    # Tables share dimensions (hour, device class, ...): each is derived once per event.
    values = {d: _dimension_values(d, event_type, data, hour) for d in needed}
    for table in plans:
        rows: list[tuple[tuple[str, ...], dict[str, int]]] = []
        if table.per_line:
            # One row per order line the engine let through with its description.
            currency = str(data.get("currency", "USD"))
            for item in data.get("items") or []:
                desc = item.get("description")
                if not isinstance(desc, str):
                    continue  # withheld (an Rx line without opt-in): counts nowhere
                sums: dict[str, int] = {}
                qty = item.get("quantity")
                price = item.get("unit_price")
                if table.quantity and isinstance(qty, int):
                    sums["quantity"] = qty
                if table.revenue and isinstance(qty, int) and price is not None:
                    sums[f"revenue.{currency}"] = _cents(price) * qty
                line = {**values, "product_category": [product_category(desc)]}
                rows += [(dims, sums) for dims in _product(table.dimensions, line)]
        else:
            sums = {}
            if table.order_total and data.get("total") is not None:
                sums[f"order_total.{data.get('currency', 'USD')}"] = _cents(data["total"])
            if table.duration_s and isinstance(data.get("duration_s"), int):
                sums["duration_s"] = data["duration_s"]
            if table.per_page:
                sums = {}  # sums are per visit, not per page
            rows = [(dims, sums) for dims in _product(table.dimensions, values)]
        if rows:
            out[table.name] = rows
    return out


def _product(dims: Iterable[str], values: Mapping[str, list[str] | None]) -> list[tuple[str, ...]]:
    combos: list[tuple[str, ...]] = [()]
    for d in dims:
        vs = values.get(d)
        if not vs:
            return []
        combos = [(*c, v) for c in combos for v in vs]
    return combos


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event adds to an aggregate agent's windows. ``event_key`` and
    ``subject_key`` are keyed digests (never emitted): the first makes counting
    idempotent, the second counts distinct customers."""

    agent: str
    event_key: str
    subject_key: str
    occurred_at: datetime
    rows: dict[str, list[tuple[tuple[str, ...], dict[str, int]]]]


# --- partials --------------------------------------------------------------------------


def window_of(at: datetime, size: timedelta) -> tuple[int, int]:
    """(size in seconds, start in epoch seconds) of the tumbling window holding ``at``."""
    s = int(size.total_seconds())
    t = int(at.timestamp())
    return s, t - t % s


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(slots=True)
class Cell:
    subjects: set[str] = field(default_factory=set)
    count: int = 0
    sums: dict[str, int] = field(default_factory=dict)

    def add(self, subject: str, sums: Mapping[str, int]) -> None:
        self.subjects.add(subject)
        self.count += 1
        for k, v in sums.items():
            self.sums[k] = self.sums.get(k, 0) + v

    def merge(self, other: Cell) -> None:
        self.subjects |= other.subjects
        self.count += other.count
        for k, v in other.sums.items():
            self.sums[k] = self.sums.get(k, 0) + v


@dataclass(slots=True)
class Partial:
    """One window's contributions on one subject partition: plain data, JSON round-trip."""

    agent: str
    partition: int
    size: int  # seconds
    start: int  # epoch seconds
    seq: int = 0  # events counted (monotone: a later snapshot has a higher seq)
    late: int = 0  # events too late for an already closed window, noted here
    watermark: int = 0  # the partition's watermark when this snapshot was taken
    events: set[str] = field(default_factory=set)
    subjects: set[str] = field(default_factory=set)
    tables: dict[str, dict[tuple[str, ...], Cell]] = field(default_factory=dict)

    @property
    def window(self) -> tuple[int, int]:
        return self.size, self.start

    def to_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "partition": self.partition,
            "size": self.size,
            "start": self.start,
            "seq": self.seq,
            "late": self.late,
            "watermark": self.watermark,
            "events": sorted(self.events),
            "subjects": sorted(self.subjects),
            "tables": {
                t: [
                    [list(k), sorted(c.subjects), c.count, dict(sorted(c.sums.items()))]
                    for k, c in sorted(cells.items())
                ]
                for t, cells in sorted(self.tables.items())
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Partial:
        tables = {
            t: {
                tuple(k): Cell(set(s), int(n), {a: int(b) for a, b in sums.items()})
                for k, s, n, sums in cells
            }
            for t, cells in doc["tables"].items()
        }
        return cls(
            agent=doc["agent"],
            partition=int(doc["partition"]),
            size=int(doc["size"]),
            start=int(doc["start"]),
            seq=int(doc["seq"]),
            late=int(doc["late"]),
            watermark=int(doc["watermark"]),
            events=set(doc["events"]),
            subjects=set(doc["subjects"]),
            tables=tables,
        )


class Aggregator:
    """One aggregate agent's open windows on one subject partition."""

    def __init__(self, spec: AggregateSpec, agent: str, partition: int = 0):
        self.spec = spec
        self.agent = agent
        self.partition = partition
        self.sizes = [parse_window(w) for w in spec.windows]
        self.grace = int(parse_window(spec.grace).total_seconds())
        self.windows: dict[tuple[int, int], Partial] = {}
        self.watermark: int | None = None  # latest occurred_at seen (epoch seconds)
        self.late = 0  # total too-late events (metrics)

    def _open(self, key: tuple[int, int]) -> Partial:
        p = self.windows.get(key)
        if p is None:
            p = self.windows[key] = Partial(self.agent, self.partition, key[0], key[1])
        return p

    def add(self, c: Contribution) -> list[Partial]:
        """Count ``c`` in each of its windows. Returns the partials it changed: empty if it
        counted nowhere (a duplicate); an event later than its window's end + grace is not
        counted but noted (``late``) in the window open at the watermark, which it returns."""
        t = int(c.occurred_at.timestamp())
        self.watermark = t if self.watermark is None else max(self.watermark, t)
        touched: dict[tuple[int, int], Partial] = {}
        for size in self.sizes:
            key = window_of(c.occurred_at, size)
            end = key[1] + key[0]
            if end + self.grace <= self.watermark:
                # Too late: the window is closed. Noted in the window now open at the
                # watermark, so the next emitted table of this size says so.
                self.late += 1
                now = self._open(window_of(datetime.fromtimestamp(self.watermark, UTC), size))
                now.late += 1
                now.watermark = self.watermark
                touched[now.window] = now
                continue
            p = self._open(key)
            if c.event_key in p.events:
                continue
            p.events.add(c.event_key)
            p.subjects.add(c.subject_key)
            p.seq += 1
            p.watermark = self.watermark
            for tname, rows in c.rows.items():
                cells = p.tables.setdefault(tname, {})
                for dims, sums in rows:
                    cell = cells.get(dims)
                    if cell is None:
                        cell = cells[dims] = Cell()
                    cell.add(c.subject_key, sums)
            touched[key] = p
        return list(touched.values())

    def advance(self, at: datetime | int) -> None:
        """Move the watermark to ``at`` if later: every event the partition decides moves
        it (not only contributions), so a partition without analytics traffic still lets
        windows close. Report it to the combiner with :meth:`Combiner.heartbeat`."""
        t = int(at.timestamp()) if isinstance(at, datetime) else at
        self.watermark = t if self.watermark is None else max(self.watermark, t)

    def partials(self) -> list[Partial]:
        """The open windows (what to persist), each stamped with the current watermark."""
        out = [self.windows[k] for k in sorted(self.windows)]
        for p in out:
            if self.watermark is not None:
                p.watermark = max(p.watermark, self.watermark)
        return out

    def restore(self, partials: Iterable[Partial]) -> None:
        """Take back persisted partials of this agent and partition (after a crash or a
        rebalance): the most advanced snapshot of each window wins."""
        for p in partials:
            if p.agent != self.agent or p.partition != self.partition:
                continue
            have = self.windows.get(p.window)
            if have is None or (have.seq, have.late) < (p.seq, p.late):
                self.windows[p.window] = p
            if p.watermark:
                self.watermark = max(self.watermark or 0, p.watermark)

    def expire(self) -> list[Partial]:
        """Drop and return the windows past end + grace (their partials are final)."""
        if self.watermark is None:
            return []
        done = [k for k in self.windows if k[1] + k[0] + self.grace <= self.watermark]
        return [self.windows.pop(k) for k in sorted(done)]


# --- combining, suppressing -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AggregateTable:
    """One window's tables as emitted to the agent (and described in its record)."""

    agent: str
    size: int
    start: int
    revision: int
    # Sent as the window closed (not in the body: a window whose last change came before
    # it closed is not sent again, so an agent cannot rely on seeing a final flag).
    final: bool
    customers: int | None  # None: fewer than k, everything suppressed
    late: int
    tables: list[dict[str, Any]]

    @property
    def window_id(self) -> str:
        return f"{self.agent}:{_iso(self.start)}/{self.size}s"

    def body(self) -> dict[str, Any]:
        return {
            "aggregate": self.agent,
            "window": {
                "start": _iso(self.start),
                "end": _iso(self.start + self.size),
                "size": _size_text(self.size),
            },
            "revision": self.revision,
            "contributing_customers": self.customers,
            "late_events": self.late,
            "tables": self.tables,
        }

    def suppressed(self) -> int:
        return sum(t["suppressed"] for t in self.tables)


def _size_text(seconds: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


Key = tuple[str | None, ...]


def relations(keys: Iterable[Key], ndim: int) -> list[tuple[Key, list[Key]]]:
    """The linear relations a table publishes: (sum entry, its parts). ``keys`` are the
    table's non-empty cells; marginals and the total are derived here."""
    cells = [k for k in keys if ALL not in k]
    total: Key = (ALL,) * ndim
    if ndim == 1:
        return [(total, sorted(cells, key=_sortkey))] if cells else []
    assert ndim == 2
    rows: dict[str | None, list[Key]] = {}
    cols: dict[str | None, list[Key]] = {}
    for k in cells:
        rows.setdefault(k[0], []).append(k)
        cols.setdefault(k[1], []).append(k)
    out: list[tuple[Key, list[Key]]] = []
    for r, parts in sorted(rows.items(), key=lambda x: str(x[0])):
        out.append(((r, ALL), sorted(parts, key=_sortkey)))
    for c, parts in sorted(cols.items(), key=lambda x: str(x[0])):
        out.append(((ALL, c), sorted(parts, key=_sortkey)))
    if rows:
        out.append((total, sorted(((r, ALL) for r in rows), key=_sortkey)))
        out.append((total, sorted(((ALL, c) for c in cols), key=_sortkey)))
    return out


def _sortkey(k: Key) -> tuple[str, ...]:
    return tuple("\x00" if v is None else v for v in k)


_PRIME = (1 << 61) - 1


def determined(suppressed: set[Any], rels: list[tuple[Any, list[Any]]]) -> set[Any]:
    """The suppressed entries an attacker can compute exactly from the published ones and
    ``rels`` (each relation: sum entry = sum of parts): Gaussian elimination on the
    unknowns (sparse rows, arithmetic modulo a 61-bit prime: the rank over the rationals
    unless the prime divides a minor of a 0/+-1 matrix, and a rank lost modulo the prime
    only suppresses more); an unknown is determined iff a reduced row is its unit vector."""
    if not suppressed:
        return set()
    order = {k: i for i, k in enumerate(sorted(suppressed, key=repr))}
    pivots: dict[int, dict[int, int]] = {}  # pivot column -> its row (pivot coefficient 1)
    for whole, parts in rels:
        row: dict[int, int] = {}
        if whole in order:
            row[order[whole]] = 1
        for p in parts:
            if p in order:
                c = order[p]
                row[c] = (row.get(c, 0) - 1) % _PRIME
        row = {c: v for c, v in row.items() if v}
        # Fully reduce by the pivot rows found so far (each has zeros in the others'
        # pivot columns), then make what is left a pivot row of its own.
        while True:
            col = next((c for c in row if c in pivots), None)
            if col is None:
                break
            f = row[col]
            for c, v in pivots[col].items():
                nv = (row.get(c, 0) - f * v) % _PRIME
                if nv:
                    row[c] = nv
                else:
                    row.pop(c, None)
        if not row:
            continue
        col = min(row)
        inv = pow(row[col], _PRIME - 2, _PRIME)
        row = {c: v * inv % _PRIME for c, v in row.items()}
        for other in pivots.values():
            g = other.get(col)
            if g:
                for c, v in row.items():
                    nv = (other.get(c, 0) - g * v) % _PRIME
                    if nv:
                        other[c] = nv
                    else:
                        other.pop(c, None)
        pivots[col] = row
    names = {i: k for k, i in order.items()}
    return {names[col] for col, row in pivots.items() if len(row) == 1}


def suppress(
    entries: Mapping[Key, tuple[int, int]],
    ndim: int,
    k: int,
    released: Mapping[Any, bool] | None = None,
    outer: list[tuple[Any, list[Any]]] = (),  # type: ignore[assignment]
) -> set[Key]:
    """Which entries of a table to suppress. ``entries`` maps every non-empty cell,
    marginal and the total to (distinct customers, count). Primary suppression below
    ``k`` customers, then complementary suppression until no suppressed entry is alone in
    a relation and the exact audit determines none (see the module docstring).

    ``released`` and ``outer``: entries already sent elsewhere (e.g. the shorter windows
    inside this one) -- published (True) or suppressed (False) -- and the relations that
    tie them to this table's entries. They count in the audit; only this table's entries
    can still be hidden."""
    released = released or {}
    rels: list[tuple[Any, list[Any]]] = [*relations(entries.keys(), ndim), *outer]
    hidden: set[Any] = {key for key, (customers, _) in entries.items() if customers < k}
    hidden |= {key for key, published in released.items() if not published}
    own = set(entries)
    if not hidden:
        return set()

    def weight(key: Key) -> tuple[int, int, tuple[str, ...]]:
        customers, count = entries[key]
        return (count, customers, _sortkey(key))

    def partner(key: Any) -> Key | None:
        """The smallest published entry of this table sharing a relation with ``key``."""
        best: Key | None = None
        for whole, parts in rels:
            group = [whole, *parts]
            if key not in group:
                continue
            for other in group:
                if (
                    other in own
                    and other not in hidden
                    and (best is None or weight(other) < weight(best))
                ):
                    best = other
        return best

    while True:
        changed = False
        for whole, parts in rels:
            group = [whole, *parts]
            alone = [g for g in group if g in hidden]
            if len(alone) == 1:
                published = [g for g in group if g in own and g not in hidden]
                if published:
                    hidden.add(min(published, key=weight))
                    changed = True
        if changed:
            continue
        exposed = determined(hidden, rels)
        if not exposed:
            return hidden & own
        for key in sorted(exposed, key=repr):
            other = partner(key)
            if other is not None:
                hidden.add(other)
                changed = True
        if not changed:
            # Nothing left to hide beside what is exposed: hide the whole table.
            return set(entries)


def combine(spec: AggregateSpec, partials: Iterable[Partial]) -> dict[str, Any]:
    """The union of partials of ONE window (one per partition): cells merged, customers
    united. Returns {"seq": total events, "late", "subjects", "tables": {t: {key: Cell}}}."""
    tables: dict[str, dict[tuple[str, ...], Cell]] = {}
    subjects: set[str] = set()
    seq = late = 0
    for p in partials:
        seq += p.seq
        late += p.late
        subjects |= p.subjects
        for t, cells in p.tables.items():
            into = tables.setdefault(t, {})
            for key, cell in cells.items():
                have = into.get(key)
                if have is None:
                    have = into[key] = Cell()
                have.merge(cell)
    return {"seq": seq, "late": late, "subjects": subjects, "tables": tables}


def _measure_values(measures: Iterable[str], cell: Cell) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in measures:
        if m == "count":
            out["count"] = cell.count
        elif m == "customers":
            out["customers"] = len(cell.subjects)
        elif m in ("order_total", "revenue"):
            per = {
                k.split(".", 1)[1]: round(v / 100, 2)
                for k, v in sorted(cell.sums.items())
                if k.startswith(m + ".")
            }
            out[m] = per
        else:
            out[m] = cell.sums.get(m, 0)
    return out


def build_tables(
    spec: AggregateSpec,
    combined: Mapping[str, Any],
    inner: Mapping[Any, Mapping[str, Mapping[Key, bool]]] | None = None,
) -> tuple[int | None, list[dict[str, Any]]]:
    """Suppressed, publishable tables from a window's combined cells. ``inner``: the
    shorter windows inside this one already sent (window id -> table -> entry ->
    published): this window's entry is the sum of theirs, so the audit covers them."""
    k = spec.k
    n_customers = len(combined["subjects"])
    out: list[dict[str, Any]] = []
    for tname, table in spec.tables.items():
        cells: dict[tuple[str, ...], Cell] = combined["tables"].get(tname, {})
        ndim = len(table.dimensions)
        entries: dict[Key, Cell] = {key: cell for key, cell in cells.items()}
        # Marginals and the total: each with its own distinct customers.
        for key, cell in cells.items():
            targets: list[Key] = [(ALL,) * ndim]
            if ndim == 2:
                targets += [(key[0], ALL), (ALL, key[1])]
            for tk in targets:
                have = entries.get(tk)
                if have is None:
                    have = entries[tk] = Cell()
                have.merge(cell)
        released: dict[Any, bool] = {}
        outer: list[tuple[Any, list[Any]]] = []
        # entry key -> the inner windows that released it, in ``inner``'s order: looked up
        # per entry below (asking every inner window about every entry was a twelfth of a
        # busy worker's main thread, measured with py-spy).
        inner_of: dict[Key, list[Any]] = {}
        for wid, tables in (inner or {}).items():
            sub = tables.get(tname, {})
            for skey, published in sub.items():
                released[(wid, skey)] = published
                inner_of.setdefault(skey, []).append(wid)
            for swhole, sparts in relations(sub.keys(), ndim):
                outer.append(((wid, swhole), [(wid, p) for p in sparts]))
        if released:
            for ekey in entries:
                wids = inner_of.get(ekey)
                if wids:
                    outer.append((ekey, [(w, ekey) for w in wids]))
        hidden = suppress(
            {key: (len(c.subjects), c.count) for key, c in entries.items()},
            ndim,
            k,
            released,
            outer,
        )
        rows = []
        for ekey in sorted(entries, key=_sortkey):
            if ekey in hidden:
                continue
            row: dict[str, Any] = dict(zip(table.dimensions, ekey, strict=True))
            row.update(_measure_values(table.measures, entries[ekey]))
            rows.append(row)
        out.append(
            {
                "_entries": {key: key not in hidden for key in entries},
                "name": tname,
                "unit": table_unit(table.dimensions, table.events),
                "events": list(table.events),
                "dimensions": list(table.dimensions),
                "measures": list(table.measures),
                "rows": rows,
                "suppressed": len(hidden),
            }
        )
    if n_customers < k:
        # The window as a whole is too small: publish no cell at all, nor its exact size
        # (the combiner then sends nothing for it).
        for t in out:
            t["suppressed"] += len(t["rows"])
            t["rows"] = []
            t["_entries"] = dict.fromkeys(t["_entries"], False)
        return None, out
    return n_customers, out


def released_entries(tables: list[dict[str, Any]]) -> dict[str, dict[Key, bool]]:
    """Take out the per-entry published flags each table was built with: the combiner
    keeps them for the longer windows' audit; they are never sent."""
    return {t["name"]: t.pop("_entries") for t in tables}


def publishable(
    spec: AggregateSpec,
    combined: Mapping[str, Any],
    inner: Mapping[Any, Mapping[str, Mapping[Key, bool]]] | None = None,
) -> tuple[int | None, list[dict[str, Any]], dict[str, dict[Key, bool]]]:
    """:func:`build_tables`, with what each entry released set apart from the tables."""
    customers, tables = build_tables(spec, combined, inner)
    return customers, tables, released_entries(tables)


class Combiner:
    """One aggregate agent's windows across ``partitions`` subject partitions: the latest
    partial per (window, partition), the partitions' watermarks, emission with revisions
    (see the module docstring).

    The combiner's watermark is the LOWEST of the partitions' watermarks: a window ends for
    it when every partition has seen an event past the window's end, and closes when every
    partition is past end + grace -- exactly when no partition can still add to it, so a
    closed window is never reopened. A partition without events holds windows open: the
    stream reports its watermark with :meth:`heartbeat` (e.g. from its consumer position's
    latest event time); ``due(final=True)`` closes everything (end of input).

    ``update`` keeps the partial object it is given (no copy): give it a deserialized
    snapshot, or the aggregator's live partial in-process (then it is marked changed)."""

    def __init__(self, spec: AggregateSpec, agent: str, partitions: int = 1):
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.spec = spec
        self.agent = agent
        self.partitions = partitions
        self.grace = int(parse_window(spec.grace).total_seconds())
        self.latest: dict[tuple[int, int], dict[int, Partial]] = {}
        self.dirty: set[tuple[int, int]] = set()
        self.revisions: dict[tuple[int, int], tuple[int, str]] = {}
        self.closed: dict[tuple[int, int], int] = {}  # closed window -> its last revision
        self.watermarks: dict[int, int] = {}
        self.ignored = 0  # partials for windows already closed (should not happen)
        # What each window last released, entry by entry (published or suppressed): a
        # longer window is the sum of the shorter ones inside it, so its audit needs them.
        self.released: dict[tuple[int, int], dict[str, dict[Key, bool]]] = {}
        self.sizes = sorted(int(parse_window(w).total_seconds()) for w in spec.windows)

    def _inner(self, size: int, start: int) -> dict[Any, dict[str, dict[Key, bool]]]:
        """The shorter windows inside (size, start) that released something."""
        out: dict[Any, dict[str, dict[Key, bool]]] = {}
        for s in self.sizes:
            if s >= size or size % s:
                continue
            for sub in range(start, start + size, s):
                got = self.released.get((s, sub))
                if got is not None:
                    out[(s, sub)] = got
        return out

    def heartbeat(self, partition: int, watermark: int | datetime) -> None:
        wm = int(watermark.timestamp()) if isinstance(watermark, datetime) else watermark
        if wm > self.watermarks.get(partition, wm - 1):
            self.watermarks[partition] = wm

    @property
    def watermark(self) -> int | None:
        if len(self.watermarks) < self.partitions:
            return None
        return min(self.watermarks.values())

    def update(self, partial: Partial) -> None:
        if partial.agent != self.agent:
            return
        if partial.watermark:
            self.heartbeat(partial.partition, partial.watermark)
        if partial.window in self.closed:
            self.ignored += 1
            return
        parts = self.latest.setdefault(partial.window, {})
        have = parts.get(partial.partition)
        if (
            have is not None
            and have is not partial
            and (have.seq, have.late) >= (partial.seq, partial.late)
        ):
            return  # an older or the same snapshot again: idempotent
        parts[partial.partition] = partial
        self.dirty.add(partial.window)

    def due(self, *, final: bool = False) -> list[AggregateTable]:
        """Tables for windows that ended (by the combiner's watermark) and changed since
        last emitted -- all windows if ``final``; forgets windows past end + grace (every
        window if ``final``) once emitted."""
        wm = self.watermark
        out: list[AggregateTable] = []
        for key in sorted(self.latest):
            size, start = key
            end = start + size
            ended = final or (wm is not None and end <= wm)
            closing = final or (wm is not None and end + self.grace <= wm)
            if ended and key in self.dirty:
                self.dirty.discard(key)
                combined = combine(self.spec, self.latest[key].values())
                customers, tables, released = publishable(
                    self.spec, combined, self._inner(size, start)
                )
                prev_release = self.released.get(key)
                if customers is not None or prev_release is None:
                    # (A window below k releases nothing: all its entries are unknowns.)
                    self.released[key] = released
                digest = hashlib.sha256(
                    orjson.dumps([customers, combined["late"], tables], option=orjson.OPT_SORT_KEYS)
                ).hexdigest()
                prev = self.revisions.get(key)
                if customers is None and prev is None:
                    # Fewer than k customers in the whole window: not even its existence
                    # is sent (a late event that brings it to k emits it then).
                    pass
                elif prev is None or prev[1] != digest:
                    rev = 0 if prev is None else prev[0] + 1
                    self.revisions[key] = (rev, digest)
                    out.append(
                        AggregateTable(
                            self.agent,
                            size,
                            start,
                            rev,
                            closing,
                            customers,
                            combined["late"],
                            tables,
                        )
                    )
            if closing:
                del self.latest[key]
                self.dirty.discard(key)
                rev_digest = self.revisions.pop(key, None)
                self.closed[key] = rev_digest[0] if rev_digest else -1
        if final:
            self.released.clear()
        elif wm is not None:
            horizon = wm - self.sizes[-1] - self.grace
            for k in [k for k in self.released if k[1] + k[0] < horizon]:
                del self.released[k]
        if len(self.closed) > 10_000:  # bounded: the oldest closed windows are forgotten
            for key in sorted(self.closed)[: len(self.closed) - 10_000]:
                del self.closed[key]
        return out


class AggregateSet:
    """Every aggregate agent of a policy over ``partitions`` subject partitions held in one
    process (the offline replay; a single worker). What it does is the protocol in the
    module docstring, in order: route, add, advance, heartbeat, update, due."""

    def __init__(self, policy: Policy, partitions: int = 1):
        self.partitions = partitions
        self.specs = {n: a.aggregate for n, a in policy.agents.items() if a.aggregate is not None}
        self.aggregators: dict[tuple[str, int], Aggregator] = {}
        self.combiners = {n: Combiner(s, n, partitions) for n, s in self.specs.items()}

    def _aggregator(self, agent: str, partition: int) -> Aggregator:
        agg = self.aggregators.get((agent, partition))
        if agg is None:
            agg = self.aggregators[(agent, partition)] = Aggregator(
                self.specs[agent], agent, partition
            )
        return agg

    def event(
        self, partition: int, occurred_at: datetime, contributions: Iterable[Contribution]
    ) -> list[AggregateTable]:
        """One decided event of ``partition`` (with what it contributed): the tables that
        became due."""
        by_agent = {c.agent: c for c in contributions}
        out: list[AggregateTable] = []
        for agent, combiner in self.combiners.items():
            agg = self._aggregator(agent, partition)
            c = by_agent.get(agent)
            if c is not None:
                for p in agg.add(c):
                    combiner.update(p)
            agg.advance(occurred_at)
            assert agg.watermark is not None
            combiner.heartbeat(partition, agg.watermark)
            agg.expire()  # the combiner holds these partials already (the live objects)
            out += combiner.due()
        return out

    def close(self) -> list[AggregateTable]:
        """End of input: every window emitted for the last time."""
        out: list[AggregateTable] = []
        for combiner in self.combiners.values():
            out += combiner.due(final=True)
        return out


# --- emitting -----------------------------------------------------------------------------


def emit(
    pipeline: Pipeline, table: AggregateTable, now: datetime | None = None
) -> tuple[DecisionRecord, AgentMessage]:
    """Seal ``table`` for its agent and build its ``aggregated`` decision record."""
    from gateway.pipeline import AgentMessage
    from gateway.records import DecisionRecord, decision_digest, payload_digest

    agent = pipeline.policy.agents[table.agent]
    spec = agent.aggregate
    assert spec is not None
    body = table.body()
    content_fp = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    purposes = list(agent.purposes)
    bases = sorted({p.legal_basis for p in agent.purposes.values()})
    paths = sorted(
        {f"{t}.{d}" for t, spec_t in spec.tables.items() for d in spec_t.dimensions}
        | {f"{t}.{m}" for t, spec_t in spec.tables.items() for m in spec_t.measures}
    )
    reason = (
        f"window {body['window']['start']}/{body['window']['size']} revision {table.revision}: "
        f"{table.customers if table.customers is not None else 'fewer than k'} contributing "
        f"customers, {table.suppressed()} entries suppressed (k={spec.k})"
    )
    digest = decision_digest(
        "aggregated", reason, paths, [], [], purposes, bases, pipeline.policy_version
    )
    rid = pipeline.ids.record_id(content_fp, table.agent, "aggregate", digest)
    ref = hashlib.sha256(f"{table.window_id}:{table.revision}".encode()).hexdigest()[:24]
    body["_gateway"] = {
        "disclosure_id": rid,
        "ref": ref,
        "purposes": purposes,
        "policy_version": pipeline.policy_version,
    }
    sealed = pipeline.sealers[table.agent].seal(
        orjson.dumps(body), ref=ref, disclosure_id=rid, kind="aggregate"
    )
    categories = sorted(
        {c for t in spec.tables.values() for d in t.dimensions for c in DIMENSIONS[d][1]}
    )
    event_id = (
        "agg-" + hashlib.sha256(f"{table.window_id}:{table.revision}".encode()).hexdigest()[:32]
    )
    rec = DecisionRecord.trusted(
        record_id=rid,
        decision_id=pipeline.ids.decision_id(content_fp, pipeline.policy_version),
        event_id=event_id,
        event_type="aggregate.window",
        occurred_at=datetime.fromtimestamp(table.start + table.size, UTC),
        recorded_at=now or pipeline.now(),
        subject_ref="",
        subject_type="aggregate",
        agent=table.agent,
        recipient=pipeline.recipients[table.agent],
        outcome="aggregated",
        reason=reason,
        purposes=purposes,
        legal_bases=bases,
        categories_sent=[c for c in categories if c.startswith("user")],
        categories_transformed=[],
        categories_removed=[],
        paths_sent=paths,
        paths_transformed=[],
        paths_removed=[],
        consent=[],
        policy_version=pipeline.policy_version,
        key_id=sealed.key_id,
        payload_digest=payload_digest(sealed.message),
        topic=agent.topic,
        event_fp=content_fp,
        consent_state=None,
    )
    key = f"agg:{table.start}:{table.size}".encode()
    return rec, AgentMessage(table.agent, agent.topic, key, sealed.message, rid, "aggregate")
