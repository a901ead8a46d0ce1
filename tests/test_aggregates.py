"""The aggregate core: thresholds, complementary suppression against a differencing
attacker, idempotence, partitions, windows (late events, grace, revisions), persistence."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.aggregates import (
    ALL,
    AggregateSet,
    AggregateTable,
    Aggregator,
    Cell,
    Combiner,
    Contribution,
    Key,
    Partial,
    browser_family,
    combine,
    device_class,
    product_category,
    publishable,
    referrer_domain,
    relations,
    suppress,
)
from gateway.policy import AggregateSpec, TableSpec

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
P = 2_147_483_647  # a prime: the attacker's arithmetic (independent of the core's)


def spec(k: int = 3, grace: str = "10m", windows: tuple[str, ...] = ("5m",)) -> AggregateSpec:
    return AggregateSpec(
        k=k,
        windows=list(windows),
        grace=grace,
        tables={
            "pages": TableSpec(events=["site.visit"], dimensions=["page"]),
            "devices": TableSpec(
                events=["site.visit"],
                dimensions=["device_class", "browser_family"],
                measures=["count", "customers", "duration_s"],
            ),
        },
    )


def contribution(
    n: int,
    customer: int,
    at: datetime,
    page: str = "/",
    device: str = "desktop",
    browser: str = "Safari",
) -> Contribution:
    return Contribution(
        "analytics",
        f"evkey{n}",
        f"subj{customer}",
        at,
        {
            "pages": [((page,), {})],
            "devices": [((device, browser), {"duration_s": 10})],
        },
    )


def final_tables(tables: list[AggregateTable]) -> dict[tuple[int, int], Any]:
    """The last revision of each window, as sent."""
    out: dict[tuple[int, int], Any] = {}
    for t in tables:
        key = (t.size, t.start)
        if key not in out or out[key]["revision"] < t.revision:
            out[key] = t.body()
    return out


# --- the differencing attacker -----------------------------------------------------------


def _rank_mod_p(rows: list[list[int]]) -> int:
    m = [[x % P for x in r] for r in rows]
    rank = 0
    ncols = len(m[0]) if m else 0
    for c in range(ncols):
        pr = next((r for r in range(rank, len(m)) if m[r][c]), None)
        if pr is None:
            continue
        m[rank], m[pr] = m[pr], m[rank]
        inv = pow(m[rank][c], P - 2, P)
        m[rank] = [x * inv % P for x in m[rank]]
        for r in range(len(m)):
            if r != rank and m[r][c]:
                f = m[r][c]
                m[r] = [(a - f * b) % P for a, b in zip(m[r], m[rank], strict=True)]
        rank += 1
    return rank


def recoverable(published: dict[Key, int], hidden: set[Key], ndim: int) -> set[Key]:
    """The hidden entries an attacker computes exactly: with every published value and
    every relation a table states (a marginal is the sum of its line, the total the sum
    of the marginals), a hidden entry is determined iff its unit vector lies in the row
    space of the relations restricted to the hidden entries (rank test, modulo a prime)."""
    keys = set(published) | hidden
    rels = relations(keys, ndim)
    unknowns = sorted(hidden, key=lambda k: tuple("" if v is None else v for v in k))
    col = {k: i for i, k in enumerate(unknowns)}
    rows = []
    for whole, parts in rels:
        row = [0] * len(unknowns)
        for key, sign in [(whole, 1)] + [(p, -1) for p in parts]:
            if key in col:
                row[col[key]] += sign
        if any(row):
            rows.append(row)
    if not rows:
        return set()
    base = _rank_mod_p(rows)
    out = set()
    for i, key in enumerate(unknowns):
        unit = [0] * len(unknowns)
        unit[i] = 1
        if _rank_mod_p([*rows, unit]) == base:
            out.add(key)
    return out


def random_table(rnd: random.Random, ndim: int) -> dict[tuple[str, ...], tuple[set[str], int]]:
    """Cells (customers, count) of a random, skewed table."""
    rows = [f"r{i}" for i in range(rnd.randint(1, 6))]
    cols = [f"c{i}" for i in range(rnd.randint(1, 5))] if ndim == 2 else [None]
    cells: dict[tuple[str, ...], tuple[set[str], int]] = {}
    next_customer = 0
    for r in rows:
        for c in cols:
            if rnd.random() < 0.2:
                continue
            n = rnd.choice([1, 1, 2, 3, 4, 6, 9, 12, 20, 40])
            subjects = {f"s{next_customer + i}" for i in range(n)}
            next_customer += n
            key = (r,) if c is None else (r, c)
            cells[key] = (subjects, n + rnd.randint(0, n))
    return cells


def entries_of(
    cells: dict[tuple[str, ...], tuple[set[str], int]], ndim: int
) -> dict[Key, tuple[set[str], int]]:
    out: dict[Key, tuple[set[str], int]] = {}
    for key, (subjects, count) in cells.items():
        targets: list[Key] = [key, (ALL,) * ndim]
        if ndim == 2:
            targets += [(key[0], ALL), (ALL, key[1])]
        for t in targets:
            s, n = out.get(t, (set(), 0))
            out[t] = (s | subjects, n + count)
    return out


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32), ndim=st.sampled_from([1, 2]), k=st.sampled_from([3, 5, 10]))
def test_no_small_cell_recoverable_from_published_marginals(seed: int, ndim: int, k: int) -> None:
    rnd = random.Random(seed)
    entries = entries_of(random_table(rnd, ndim), ndim)
    hidden = suppress({key: (len(s), n) for key, (s, n) in entries.items()}, ndim, k)
    published = {key: n for key, (_, n) in entries.items() if key not in hidden}
    # Nothing below the threshold is published...
    assert all(len(entries[key][0]) >= k for key in published)
    # ...and nothing hidden can be computed from what is.
    assert recoverable(published, hidden, ndim) == set()


def test_the_attacker_recovers_cells_when_only_primary_suppression_is_applied() -> None:
    """The property test's attacker is not toothless: on the same kind of tables, primary
    suppression alone leaves small cells it computes exactly."""
    found = 0
    for seed in range(300):
        rnd = random.Random(seed)
        ndim = 1 + seed % 2
        entries = entries_of(random_table(rnd, ndim), ndim)
        primary = {key for key, (s, _) in entries.items() if len(s) < 5}
        published = {key: n for key, (_, n) in entries.items() if key not in primary}
        found += bool(recoverable(published, primary, ndim))
    assert found > 50


def test_a_single_small_cell_takes_the_next_smallest_with_it() -> None:
    entries: dict[Key, tuple[int, int]] = {
        ("a",): (12, 12),
        ("b",): (3, 3),
        ("c",): (20, 20),
        ("d",): (15, 15),
        (None,): (50, 50),
    }
    assert suppress(entries, 1, 10) == {("b",), ("a",)}


def test_a_small_total_hides_the_whole_table() -> None:
    entries: dict[Key, tuple[int, int]] = {("a",): (4, 4), ("b",): (3, 3), (None,): (7, 7)}
    assert suppress(entries, 1, 10) == set(entries)


def test_published_rows_meet_the_threshold_and_carry_no_identifier() -> None:
    s = spec(k=3)
    agg = Aggregator(s, "analytics")
    n = 0
    for customer in range(20):
        for _ in range(2):
            page = "/popular" if customer < 15 else f"/rare{customer % 2}"
            agg.add(contribution(n, customer, T0 + timedelta(seconds=n), page=page))
            n += 1
    customers, tables, _ = publishable(s, combine(s, agg.partials()))
    assert customers == 20
    pages = {r["page"]: r for r in tables[0]["rows"]}
    assert pages["/popular"] == {"page": "/popular", "count": 30, "customers": 15}
    assert pages[None]["customers"] == 20 and pages[None]["count"] == 40
    # /rare0 and /rare1 have 3 and 2 customers: one is small, the other goes with it
    # (the total would give it away otherwise).
    assert "/rare0" not in pages and "/rare1" not in pages
    assert tables[0]["suppressed"] == 2
    text = orjson.dumps(tables).decode()
    assert "subj" not in text and "evkey" not in text


# --- idempotence, partitions, persistence ---------------------------------------------------


def stream(n: int, customers: int, seed: int = 1) -> list[Contribution]:
    rnd = random.Random(seed)
    out = []
    t = T0
    for i in range(n):
        t += timedelta(seconds=rnd.randint(0, 20))
        out.append(
            contribution(
                i,
                rnd.randrange(customers),
                t,
                page=rnd.choice(["/", "/frames", "/lenses", "/cart", "/help"]),
                device=rnd.choice(["desktop", "mobile", "tablet"]),
                browser=rnd.choice(["Safari", "Chrome", "Firefox"]),
            )
        )
    return out


def run_set(contribs: list[Contribution], partitions: int, s: AggregateSpec) -> dict[Any, Any]:
    from gateway.policy import Agent, RecipientSpec

    agent = Agent(
        description="x",
        recipient=RecipientSpec(legal_name="x", address="x", role="service_provider"),
        topic="agent.analytics",
        public_key="x",
        subscribes=["site.visit"],
        purposes={
            "analytics.reporting": {
                "legal_basis": "legitimate_interests",
                "categories": {"system.operations": "send"},
            }
        },
        kind="aggregate",
        aggregate=s,
    )

    class _P:
        agents = {"analytics": agent}

    sets = AggregateSet(_P(), partitions)  # type: ignore[arg-type]
    out: list[AggregateTable] = []
    for c in contribs:
        part = int(c.subject_key.removeprefix("subj")) % partitions
        out += sets.event(part, c.occurred_at, [c])
    out += sets.close()
    return final_tables(out)


def test_redelivered_events_are_counted_once() -> None:
    s = spec()
    contribs = stream(300, 40)
    once = Aggregator(s, "analytics")
    twice = Aggregator(s, "analytics")
    for c in contribs:
        once.add(c)
    for i, c in enumerate(contribs):
        twice.add(c)
        if i % 3 == 0:
            assert twice.add(c) == []  # a redelivery changes nothing
    assert [p.to_json() for p in once.partials()] == [p.to_json() for p in twice.partials()]


def test_two_partitions_combine_to_what_one_gives() -> None:
    s = spec(k=5, windows=("5m", "1h"))
    contribs = stream(3000, 200)
    one = run_set(contribs, 1, s)
    assert one == run_set(contribs, 2, s) == run_set(contribs, 3, s)
    published = sum(len(t["rows"]) for w in one.values() for t in w["tables"])
    assert published > 50  # the comparison compares something


def test_a_crash_restored_from_persisted_partials_with_redelivery_gives_the_same_tables() -> None:
    """The stream persists partials (JSON) after a batch, crashes later, restores them and
    is redelivered everything after the last committed offset: same windows."""
    s = spec(k=5, windows=("5m", "1h"))
    contribs = stream(2000, 150, seed=4)
    clean = Aggregator(s, "analytics")
    for c in contribs:
        clean.add(c)
    crashed = Aggregator(s, "analytics")
    for c in contribs[:1200]:
        crashed.add(c)
    saved = orjson.dumps([p.to_json() for p in crashed.partials()])
    for c in contribs[1200:1300]:  # processed, not yet persisted nor committed
        crashed.add(c)
    restored = Aggregator(s, "analytics")
    restored.restore(Partial.from_json(d) for d in orjson.loads(saved))
    for c in contribs[1150:]:  # redelivered from an older committed offset
        restored.add(c)
    assert [p.to_json() for p in restored.partials()] == [p.to_json() for p in clean.partials()]


def test_combiner_takes_each_partitions_latest_partial_once() -> None:
    s = spec(k=2)
    a, b = Aggregator(s, "analytics", 0), Aggregator(s, "analytics", 1)
    for i in range(6):
        (a if i % 2 else b).add(contribution(i, i, T0 + timedelta(seconds=i)))
    snap_a = [Partial.from_json(p.to_json()) for p in a.partials()]
    c = Combiner(s, "analytics", 2)
    for p in snap_a + b.partials() + snap_a:  # the same snapshot twice: idempotent
        c.update(p)
    (older,) = [Partial.from_json(p.to_json()) for p in a.partials()]
    older.seq -= 1
    c.update(older)  # an older snapshot does not replace a newer one
    (table,) = c.due(final=True)
    assert table.customers == 6
    assert next(r for r in table.tables[0]["rows"] if r["page"] is None)["count"] == 6


# --- windows ---------------------------------------------------------------------------


def test_late_events_within_grace_re_emit_and_after_grace_are_counted_late() -> None:
    s = spec(k=3, grace="10m")
    c = Combiner(s, "analytics", 1)
    agg = Aggregator(s, "analytics")
    emitted: list[AggregateTable] = []

    def send(n: int, customer: int, at: datetime) -> None:
        for p in agg.add(contribution(n, customer, at)):
            c.update(p)
        assert agg.watermark is not None
        c.heartbeat(0, agg.watermark)
        emitted.extend(c.due())

    for i in range(4):  # window 10:00-10:05
        send(i, i, T0 + timedelta(minutes=1, seconds=i))
    assert emitted == []  # not ended yet
    send(10, 10, T0 + timedelta(minutes=6))  # 10:06: the 10:00 window ends
    assert [(t.start, t.revision, t.customers) for t in emitted] == [(int(T0.timestamp()), 0, 4)]
    send(11, 11, T0 + timedelta(minutes=3))  # late, within grace: revision 1
    assert [(t.revision, t.customers, t.final) for t in emitted[1:]] == [(1, 5, False)]
    send(12, 12, T0 + timedelta(minutes=16))  # 10:16: past 10:05 + 10m, window closed
    assert emitted[-1].start == int(T0.timestamp()) + 300 or emitted[-1].revision == 1
    before = len(emitted)
    send(13, 13, T0 + timedelta(minutes=2))  # after grace: not added, counted late
    assert all(t.start != int(T0.timestamp()) for t in emitted[before:])
    assert agg.late == 1
    for i in range(3):
        send(20 + i, 20 + i, T0 + timedelta(minutes=16, seconds=i))
    emitted += c.due(final=True)
    last = emitted[-1]
    assert last.start == int((T0 + timedelta(minutes=15)).timestamp())
    assert last.late == 1 and last.final
    # No revision of the 10:00 window ever counted the event after grace.
    assert max(t.customers or 0 for t in emitted if t.start == int(T0.timestamp())) == 5


def test_a_window_with_fewer_than_k_customers_is_not_sent() -> None:
    s = spec(k=5)
    c = Combiner(s, "analytics", 1)
    agg = Aggregator(s, "analytics")
    for i in range(4):
        for p in agg.add(contribution(i, i, T0 + timedelta(seconds=i))):
            c.update(p)
    assert c.due(final=True) == []


def test_window_bounds_are_the_only_times_in_a_table() -> None:
    s = spec(k=2, windows=("5m", "1h"))
    got = run_set(stream(400, 30), 1, s)
    for (size, start), body in got.items():
        assert start % size == 0
        for text in (body["window"]["start"], body["window"]["end"]):
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            assert int(t.timestamp()) % size == 0


@pytest.mark.parametrize("bad", ["0m", "5x", "m5"])
def test_windows_parse_strictly(bad: str) -> None:
    from gateway.aggregates import parse_window

    with pytest.raises(ValueError):
        parse_window(bad)


# --- windows inside windows --------------------------------------------------------------


def _nested_run(seed: int, audit_inner: bool) -> set[Any]:
    """One hour of skewed traffic in 5-minute and 1-hour windows (k=5) through the real
    aggregator and combiner; returns what an attacker holding every table sent can
    compute exactly of what was suppressed, using that an hour's cell is the sum of its
    twelve 5-minute cells."""
    import gateway.aggregates as core

    s = AggregateSpec(
        k=5,
        windows=["5m", "1h"],
        grace="1m",
        tables={"pages": TableSpec(events=["site.visit"], dimensions=["page"])},
    )
    rnd = random.Random(seed)
    agg, comb = Aggregator(s, "analytics"), Combiner(s, "analytics", 1)
    if not audit_inner:
        comb._inner = lambda size, start: {}  # type: ignore[method-assign]
    pages = ["/a", "/b", "/c", "/d"]
    sent: list[AggregateTable] = []
    # In time order: no late event, so an hour's cell is exactly the sum of its 5m cells.
    times = sorted(rnd.randrange(3600) for _ in range(rnd.randint(60, 200)))
    for i, second in enumerate(times):
        at = T0 + timedelta(seconds=second)
        page = rnd.choices(pages, weights=[8, 4, 2, 1])[0]
        for p in agg.add(contribution(i, rnd.randrange(60), at, page=page)):
            comb.update(p)
    sent += comb.due(final=True)
    windows = {(p.size, p.start): p for p in agg.partials()}
    published: dict[tuple[int, int], dict[Key, bool]] = {}
    truth: dict[tuple[int, int], set[Key]] = {}
    for wid, p in windows.items():
        cells = core.combine(s, [p])["tables"].get("pages", {})
        keys: set[Key] = set(cells) | ({(ALL,)} if cells else set())
        truth[wid] = keys
        body = next((t for t in sent if (t.size, t.start) == wid), None)
        rows = {(r["page"],) for r in body.tables[0]["rows"]} if body else set()
        published[wid] = {k: k in rows for k in keys}
    rels: list[tuple[Any, list[Any]]] = []
    for wid, keys in truth.items():
        rels += [((wid, w), [(wid, q) for q in parts]) for w, parts in relations(keys, 1)]
    hour = (3600, int(T0.timestamp()))
    for key in truth.get(hour, set()):
        subs = [(w, key) for w in truth if w[0] == 300 and key in truth[w]]
        rels.append(((hour, key), subs))
    hidden = [(w, k) for w, flags in published.items() for k, pub in flags.items() if not pub]
    col = {x: i for i, x in enumerate(hidden)}
    matrix = []
    for whole, parts in rels:
        row = [0] * len(hidden)
        for x, sign in [(whole, 1)] + [(q, -1) for q in parts]:
            if x in col:
                row[col[x]] += sign
        if any(row):
            matrix.append(row)
    if not matrix:
        return set()
    base = _rank_mod_p(matrix)
    found = set()
    for i, x in enumerate(hidden):
        unit = [0] * len(hidden)
        unit[i] = 1
        if _rank_mod_p([*matrix, unit]) == base:
            found.add(x)
    return found


def test_no_suppressed_cell_is_recoverable_from_the_hour_and_its_five_minute_windows() -> None:
    for seed in range(60):
        assert _nested_run(seed, audit_inner=True) == set(), seed


def test_without_the_nested_audit_the_attacker_would_recover_cells() -> None:
    assert sum(bool(_nested_run(seed, audit_inner=False)) for seed in range(60)) >= 5


def test_the_classifiers_remember_a_bounded_number_of_short_strings() -> None:
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0) AppleWebKit Safari/604.1"
    assert device_class(ua) == "mobile" and device_class(ua) == "mobile"
    assert browser_family(ua) == "Safari"
    for i in range(5_000):  # more than the memory holds: it starts again, answers stay right
        assert device_class(f"SomeBot/{i}") == "bot"
    assert device_class(ua) == "mobile"
    assert device_class("x" * 600 + " tablet") == "tablet"  # long: not remembered, still right
    assert referrer_domain("https://www.Example.com/a?b") == "example.com"
    assert referrer_domain(None) == "(none)" and referrer_domain("http://[::1") == "(none)"
    assert product_category("Polarized sunglasses") == "sunglasses"


def test_a_longer_window_hides_an_entry_that_would_expose_a_shorter_windows_suppressed_one() -> (
    None
):
    # The hour's "/a" is the sum of its 5-minute windows' "/a": with the first published
    # and the second suppressed, publishing the hour's would give the second away (and,
    # through that window's total, its "/b"). So the hour hides "/a" and "/b" and still
    # publishes what exposes nothing.
    s = AggregateSpec(
        k=3,
        windows=["5m", "1h"],
        grace="10m",
        tables={"pages": TableSpec(events=["site.visit"], dimensions=["page"])},
    )

    def cell(n: int, tag: str) -> Cell:
        return Cell({f"{tag}{i}" for i in range(n)}, n, {})

    combined = {
        "seq": 20,
        "late": 0,
        "subjects": {f"s{i}" for i in range(20)},
        "tables": {"pages": {("/a",): cell(7, "a"), ("/b",): cell(6, "b"), ("/c",): cell(7, "c")}},
    }
    everything = {("/a",): True, ("/b",): True, ("/c",): True, (ALL,): True}
    inner = {
        (300, 0): {"pages": everything},
        (300, 300): {"pages": {**everything, ("/a",): False, ("/b",): False}},
    }
    customers, tables, released = publishable(s, combined, inner)
    assert customers == 20
    assert [row["page"] for row in tables[0]["rows"]] == [ALL, "/c"]
    assert released["pages"] == {("/a",): False, ("/b",): False, ("/c",): True, (ALL,): True}
