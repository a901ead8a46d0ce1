"""Output formats for records and reports: rich table, JSON, CSV, HTML.

Everything is first turned into a ``Document`` (title, key/value facts, tables of strings);
each format then only lays that out. HTML escapes every value, and CSV neutralises cells a
spreadsheet would run as a formula, since record fields (e.g. a reason) are free text.
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
                r.event_type,
                r.subject_type,
                lines(r.purposes),
                lines([*r.categories_sent, *r.categories_transformed]),
            ]
            for r in records
        ],
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
    ]
    rows = [[text(getattr(s, c)) for c in cols] for s in rep.recipients]
    facts = [
        ("subject", rep.subject_ref),
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
                lines([s.legal_name, s.address, s.role, s.contract]),
                s.agent,
                f"{s.disclosures} / {s.withheld} / {s.erasure_notices}",
                lines(s.categories),
                lines(s.purposes),
                lines(s.legal_bases),
                f"{short(s.first_disclosed)}\n{short(s.last_disclosed)}",
            ]
            for s in rep.recipients
        ],
    )
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


def print_table(doc: Document, console: Console) -> None:
    # markup=False: values are data, never rich markup (a "[bold]" in a reason stays text).
    console.print(doc.title, style="bold", markup=False)
    for k, v in doc.facts:
        console.print(f"  {k}: {v}", markup=False, highlight=False)
    for sec in doc.screen if doc.screen is not None else doc.sections:
        table = Table(title=sec.title, show_lines=any("\n" in c for r in sec.rows for c in r))
        for c in sec.columns:
            # Ids are copied into other commands (`log show ID`): never fold them.
            ident = c in ("record_id", "agent")
            table.add_column(
                c, overflow="fold", no_wrap=ident, min_width=36 if c == "record_id" else None
            )
        for row in sec.rows:
            table.add_row(*(Text(c) for c in row))
        console.print(table)


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
