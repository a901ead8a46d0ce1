"""Output formats for records and reports: rich table, JSON, CSV, HTML.

Everything is first turned into a ``Document`` (title, key/value facts, tables of strings);
each format then only lays that out. HTML escapes every value, and CSV neutralises cells a
spreadsheet would run as a formula, since record fields (e.g. a reason) are free text.

On the terminal a table is laid out for the console's width (``print_table``): no column
is narrower than its longest word, so nothing is cut mid-word; when the columns do not fit,
the section's optional ones are left out (least important first, and the table says
which), and when even the rest do not fit, each row is printed as a block of
"column  value" lines.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from gateway.ledger.reports import AgentReport, ShineTheLightReport, SubjectReport
from gateway.records import DecisionRecord

FORMATS = ("table", "json", "csv", "html")


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[str]]
    # Columns a narrow terminal may leave out, least important first.
    optional: tuple[str, ...] = ()


@dataclass
class Document:
    title: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    # A narrower layout for the terminal (multi-line cells); None: the sections as they are.
    screen: list[Section] | None = None


def text(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, list | tuple | set):
        return ", ".join(text(v) for v in value) or "—"
    return str(value)


def lines(values: Iterable[Any]) -> str:
    return "\n".join(text(v) for v in values) or "—"


def short(when: datetime | None) -> str:
    return "—" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


# -- building documents -------------------------------------------------------------------

RECORD_COLUMNS = [
    "recorded_at",
    "record_id",
    "agent",
    "outcome",
    "reason",
    "event_type",
    "subject_type",
    "subject_ref",
    "purposes",
    "categories_sent",
    "categories_transformed",
    "categories_removed",
]


def records_document(records: Sequence[DecisionRecord], title: str = "Disclosure log") -> Document:
    rows = [[text(getattr(r, c)) for c in RECORD_COLUMNS] for r in records]
    screen = Section(
        "Records",
        [
            "recorded",
            "record_id",
            "agent",
            "outcome",
            "reason",
            "event_type",
            "subject",
            "purposes",
            "categories disclosed",
        ],
        [
            [
                short(r.recorded_at),
                r.record_id,
                r.agent,
                r.outcome,
                text(r.reason),
                r.event_type,
                r.subject_type,
                lines(r.purposes),
                lines([*r.categories_sent, *r.categories_transformed]),
            ]
            for r in records
        ],
        optional=("purposes", "subject", "event_type", "categories disclosed"),
    )
    return Document(
        title,
        [("records", str(len(records)))],
        [Section("Records", RECORD_COLUMNS, rows)],
        [screen],
    )


def record_document(rec: DecisionRecord, location: dict[str, Any]) -> Document:
    data = rec.model_dump()
    recipient = data.pop("recipient")
    facts = [(k, text(v)) for k, v in data.items()]
    facts += [(f"recipient.{k}", text(v)) for k, v in recipient.items()]
    facts += [(k, text(v)) for k, v in location.items()]
    return Document(f"Record {rec.record_id}", facts)


def subject_document(rep: SubjectReport) -> Document:
    cols = [
        "agent",
        "legal_name",
        "address",
        "role",
        "contract",
        "disclosures",
        "withheld",
        "erasure_notices",
        "categories",
        "purposes",
        "legal_bases",
        "first_disclosed",
        "last_disclosed",
        "references",
        "contributions",
        "aggregate_statement",
    ]
    rows = [[text(getattr(s, c)) for c in cols] for s in rep.recipients]
    facts = [("subject", rep.subject_ref)]
    if len(rep.subject_refs) > 1:
        facts.append(("earlier pseudonym periods", text(rep.subject_refs[1:])))
    facts += [
        ("subject type", text(rep.subject_types)),
        ("records", str(rep.records)),
        ("generated", text(rep.generated_at)),
    ]
    screen = Section(
        "Recipients",
        [
            "recipient",
            "agent",
            "disclosed / withheld / erasure",
            "categories",
            "purposes",
            "legal bases",
            "first / last disclosed",
        ],
        [
            [
                lines(
                    [
                        s.legal_name,
                        s.address,
                        s.role,
                        s.contract,
                        *(f"request {r}" for r in s.references),
                    ]
                ),
                s.agent,
                f"{s.disclosures} / {s.withheld} / {s.erasure_notices}",
                lines(s.categories),
                lines(s.purposes),
                lines(s.legal_bases),
                f"{short(s.first_disclosed)}\n{short(s.last_disclosed)}",
            ]
            for s in rep.recipients
        ],
        optional=("purposes", "first / last disclosed", "legal bases"),
    )
    # Aggregate-only recipients, in words: what the subject's events contributed to.
    facts += [
        (f"aggregate statistics ({s.agent})", s.aggregate_statement)
        for s in rep.recipients
        if s.aggregate_statement
    ]
    return Document(
        "Access request: disclosures about one subject",
        facts,
        [Section("Recipients", cols, rows)],
        [screen],
    )


def agent_document(rep: AgentReport) -> Document:
    r = rep.recipient or {}
    facts = [
        ("agent", rep.agent),
        ("legal name", text(r.get("legal_name"))),
        ("address", text(r.get("address"))),
        ("role", text(r.get("role"))),
        ("contract", text(r.get("contract"))),
        ("since", text(rep.since)),
        ("until", text(rep.until)),
        ("records", str(rep.records)),
        ("distinct subjects", str(rep.subjects)),
        ("first", text(rep.first)),
        ("last", text(rep.last)),
        ("generated", text(rep.generated_at)),
    ]

    def counts(title: str, data: dict[str, int], what: str) -> Section:
        return Section(title, [what, "count"], [[k, str(v)] for k, v in data.items()])

    return Document(
        f"Agent report: {rep.agent}",
        facts,
        [
            counts("Outcomes", rep.outcomes, "outcome"),
            counts("Subjects by type", rep.subjects_by_type, "subject_type"),
            counts("Categories received", rep.categories, "category"),
            counts("Purposes", rep.purposes, "purpose"),
            counts("Event types", rep.event_types, "event_type"),
            counts("Disclosures per month", rep.months, "month"),
        ],
    )


def shine_the_light_document(rep: ShineTheLightReport) -> Document:
    cols = [
        "agent",
        "legal_name",
        "address",
        "categories",
        "purposes",
        "disclosures",
        "subjects",
        "consumer_subjects",
        "business_subjects",
    ]
    rows = [[text(getattr(p, c)) for c in cols] for p in rep.third_parties]
    facts = [
        ("year", str(rep.year)),
        ("categories disclosed", text(rep.categories)),
        ("third parties", str(len(rep.third_parties))),
        ("generated", text(rep.generated_at)),
    ]
    return Document(
        f"Shine the Light {rep.year}: personal information disclosed to third parties for"
        " their direct marketing",
        facts,
        [Section("Third parties", cols, rows)],
        [
            Section(
                "Third parties",
                [
                    "third party",
                    "agent",
                    "categories",
                    "purposes",
                    "disclosures",
                    "subjects (consumer / business)",
                ],
                [
                    [
                        lines([p.legal_name, p.address]),
                        p.agent,
                        lines(p.categories),
                        lines(p.purposes),
                        str(p.disclosures),
                        f"{p.subjects} ({p.consumer_subjects} / {p.business_subjects})",
                    ]
                    for p in rep.third_parties
                ],
                optional=("purposes", "subjects (consumer / business)"),
            )
        ],
    )


# -- formats ------------------------------------------------------------------------------


def to_json(data: Any) -> str:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def _safe_cell(value: str) -> str:
    # A leading = + - @ (or tab/CR) makes spreadsheets evaluate the cell (CSV injection).
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def to_csv(doc: Document) -> str:
    """One CSV table; several sections are stacked with a leading ``section`` column."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    if len(doc.sections) == 1:
        sec = doc.sections[0]
        w.writerow(sec.columns)
        w.writerows([_safe_cell(c) for c in row] for row in sec.rows)
        return out.getvalue()
    columns: list[str] = []
    for sec in doc.sections:
        columns += [c for c in sec.columns if c not in columns]
    w.writerow(["section", *columns])
    for sec in doc.sections:
        for row in sec.rows:
            cells = dict(zip(sec.columns, row, strict=True))
            w.writerow([_safe_cell(sec.title), *(_safe_cell(cells.get(c, "")) for c in columns)])
    return out.getvalue()


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 8px;"
    "text-align:left;vertical-align:top}th{background:#f3f3f3}caption{font-weight:bold;"
    "text-align:left;padding:4px 0}dt{font-weight:bold;float:left;clear:left;width:12em}"
    "dd{margin-left:13em}"
)


def to_html(doc: Document) -> str:
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(doc.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(doc.title)}</h1>",
    ]
    if doc.facts:
        parts.append("<dl>")
        parts += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in doc.facts]
        parts.append("</dl>")
    for sec in doc.sections:
        parts.append(f"<table><caption>{e(sec.title)}</caption><thead><tr>")
        parts += [f"<th>{e(c)}</th>" for c in sec.columns]
        parts.append("</tr></thead><tbody>")
        for row in sec.rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# Identifiers are copied into other commands (`log show ID`): never folded.
_IDENTS = frozenset({"record_id", "agent", "subject_ref"})
_MAX_WORD = 64  # a longer "word" (a URL, junk) may fold rather than widen its column


def _natural(column: str, cells: list[str]) -> int:
    return max([len(column), *(len(line) for c in cells for line in c.split("\n"))])


def _minimum(column: str, cells: list[str]) -> int:
    """The narrowest the column may be: its longest word (so no word is split), or all
    of it for an identifier."""
    if column in _IDENTS:
        return _natural(column, cells)
    words = [len(w) for c in [column, *cells] for w in c.split()]
    return min(max(words, default=1), _MAX_WORD)


def fit_widths(natural: list[int], minimum: list[int], available: int) -> list[int] | None:
    """Column widths that sum to at most ``available``: each column its natural width if
    all fit, else the widest ones narrowed to a common width, none below its minimum.
    None if even the minimums do not fit."""
    if sum(minimum) > available:
        return None
    if sum(natural) <= available:
        return list(natural)
    lo, hi = 0, max(natural)
    while lo < hi:  # the largest cap at which the columns still fit
        cap = (lo + hi + 1) // 2
        if sum(max(m, min(n, cap)) for n, m in zip(natural, minimum, strict=True)) <= available:
            lo = cap
        else:
            hi = cap - 1
    return [max(m, min(n, lo)) for n, m in zip(natural, minimum, strict=True)]


def _table_overhead(columns: int) -> int:
    # Rich's default box: one space of padding each side of a cell, a rule between and
    # around the columns.
    return 3 * columns + 1


def _print_blocks(sec: Section, console: Console) -> None:
    """Each row as "column  value" lines: for terminals too narrow for the table."""
    console.print(sec.title, style="bold italic", markup=False)
    label = min(max(len(c) for c in sec.columns), 24)
    for row in sec.rows:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", width=label, overflow="fold")
        grid.add_column(overflow="fold")
        for column, cell in zip(sec.columns, row, strict=True):
            grid.add_row(Text(column), Text(cell))
        console.print(grid)
        console.print()


def print_section(sec: Section, console: Console) -> None:
    """One section laid out for ``console.width`` (see the module docstring)."""
    columns, rows, dropped = list(sec.columns), [list(r) for r in sec.rows], []
    optional = [c for c in sec.optional if c in columns]
    while True:
        cells = [[r[i] for r in rows] for i in range(len(columns))]
        widths = fit_widths(
            [_natural(c, cells[i]) for i, c in enumerate(columns)],
            [_minimum(c, cells[i]) for i, c in enumerate(columns)],
            console.width - _table_overhead(len(columns)),
        )
        if widths is not None or not optional:
            break
        i = columns.index(optional.pop(0))
        dropped.append(columns.pop(i))
        rows = [r[:i] + r[i + 1 :] for r in rows]
    if widths is None:
        _print_blocks(sec, console)
        return
    table = Table(title=sec.title, show_lines=any("\n" in c for r in rows for c in r))
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column, width=width, overflow="fold", no_wrap=column in _IDENTS)
    for row in rows:
        table.add_row(*(Text(c) for c in row))
    console.print(table)
    if dropped:
        console.print(
            f"(not shown at {console.width} columns: {', '.join(dropped)}; use a wider"
            " terminal or --format csv)",
            style="dim",
            markup=False,
            highlight=False,
        )


def print_table(doc: Document, console: Console) -> None:
    # markup=False: values are data, never rich markup (a "[bold]" in a reason stays text).
    console.print(doc.title, style="bold", markup=False)
    for k, v in doc.facts:
        console.print(f"  {k}: {v}", markup=False, highlight=False)
    for sec in doc.screen if doc.screen is not None else doc.sections:
        print_section(sec, console)


def render(doc: Document, fmt: str, json_data: Any, console: Console | None = None) -> str:
    """The document in ``fmt``; for ``table`` it is printed to ``console`` and '' returned."""
    if fmt == "json":
        return to_json(json_data)
    if fmt == "csv":
        return to_csv(doc)
    if fmt == "html":
        return to_html(doc)
    if fmt == "table":
        print_table(doc, console or Console())
        return ""
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def records_json(records: Iterable[DecisionRecord]) -> list[dict[str, Any]]:
    return [r.model_dump(mode="json") for r in records]
