"""`gateway log` for a reader at a terminal: names the log has never seen are errors that
say how to check them (exit 2, not an empty answer), and tables fit the terminal, every
shown column readable."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from gateway.cli.common import NO_TERMINAL_WIDTH, FittedConsole
from gateway.cli.log import log
from gateway.ledger import render
from gateway.records import DecisionRecord
from tests.cli.helpers import ROOT, Env
from tests.ledger.data import ref

KNOWN = "known agents: analytics, email, payments, reseller, shipping"


def run(env: Env, *args: str, columns: int = 240, policy: Path | None = None) -> Result:
    environ = {"COLUMNS": str(columns), "GATEWAY_POLICY_PATH": str(policy or env.tmp / "none")}
    return CliRunner(env=environ).invoke(
        log, [*args, "--db", env.url, "--keys-dir", str(env.keys)], catch_exceptions=False
    )


# -- unknown names ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("report", "subject", "C-9999"),
        ("list", "--subject", "C-9999"),
        ("export", "--subject", "c-1001", "--format", "json"),  # case counts
    ],
)
def test_an_unknown_customer_id_is_an_error(env: Env, args: tuple[str, ...]) -> None:
    res = run(env, *args)
    assert res.exit_code == 2, res.output
    assert "no records for this customer id: check it is spelled exactly" in res.output
    assert str(env.keys / "pseudonym.key") in res.output  # which key it was looked up with
    assert "C-9999" not in res.output and "c-1001" not in res.output  # no ids in errors


def test_an_unknown_subject_reference_is_an_error(env: Env) -> None:
    missing = "subj_" + "0" * 32
    for args in (
        ("report", "subject", "--subject-ref", missing),
        ("list", "--subject-ref", missing),
    ):
        res = run(env, *args)
        assert res.exit_code == 2
        assert f"no records for this subject reference ({missing})" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ("report", "agent", "nobdy"),
        ("list", "--agent", "Email"),
        ("export", "--agent", "shiping", "--format", "csv"),
    ],
)
def test_an_unknown_agent_is_an_error(env: Env, args: tuple[str, ...]) -> None:
    res = run(env, *args)
    assert res.exit_code == 2, res.output
    assert f"unknown agent {args[2]!r}: no record names it; {KNOWN}" in res.output


def test_known_names_still_answer(env: Env, tmp_path: Path) -> None:
    assert run(env, "report", "subject", "C-1004").exit_code == 0
    assert run(env, "report", "subject", "--subject-ref", ref("C-1004")).exit_code == 0
    assert run(env, "list", "--agent", "email", "--since", "2031-01-01").exit_code == 0
    # An agent the policy declares but the log has no record of yet: an empty report.
    policy = tmp_path / "agents.yaml"
    policy.write_text(
        (ROOT / "agents.yaml").read_text().replace("\n  shipping:\n", "\n  courier:\n")
    )
    res = run(env, "report", "agent", "courier", "--format", "json", policy=policy)
    assert res.exit_code == 0 and '"records": 0' in res.output
    res = run(env, "report", "agent", "nobdy", policy=policy)
    assert res.exit_code == 2 and "courier" in res.output  # the policy's agents are known too


def test_a_pruned_subject_is_no_longer_known(env: Env) -> None:
    assert run(env, "report", "subject", "C-1004").exit_code == 0
    assert run(env, "prune", "--before", "2030-01-01", "--yes").exit_code == 0
    res = run(env, "report", "subject", "C-1004")
    assert res.exit_code == 2 and "records pruned by retention no longer name" in res.output


# -- tables that fit the terminal ----------------------------------------------------------


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.mark.parametrize("columns", [80, 100, 120, 160, 240])
def test_list_fits_the_terminal(env: Env, columns: int) -> None:
    res = run(env, "list", "--limit", "20", columns=columns)
    assert res.exit_code == 0, res.output
    assert _widest(res.output) <= columns
    for rec in env.records[:20]:
        assert rec.record_id in res.output  # ids whole, to copy into `log show`
    withheld = [r for r in env.records[:20] if r.outcome == "withheld"]
    assert withheld and all(r.reason for r in withheld)
    # The reason, each word whole (a narrow column wraps between words).
    assert {"nothing", "permitted", "for", "this", "subject"} <= set(res.output.split())
    if columns >= 240:
        assert "not shown" not in res.output


def test_report_fits_the_terminal(env: Env) -> None:
    for columns in (80, 120, 200):
        res = run(env, "report", "subject", "B-2001", columns=columns)
        assert res.exit_code == 0 and _widest(res.output) <= columns
        for r in latest_recipients_of(env, "B-2001"):
            assert r.agent in res.output
        # Dotted names are whole on some line, never cut in the middle.
        assert "user.contact.address.postal_code" in res.output


def latest_recipients_of(env: Env, customer: str) -> list[DecisionRecord]:
    return [r for r in env.records if r.subject_ref == ref(customer)][:3]


def test_columns_are_never_narrower_than_their_longest_word() -> None:
    section = render.Section(
        "Things",
        ["record_id", "agent", "reason", "categories"],
        [
            [
                "0f5b1a52-7c8e-5e3c-9e1b-2f9ab1c0ffee",
                "shipping",
                "nothing permitted for this subject",
                "user.contact.address.postal_code\nuser.name",
            ]
        ],
        optional=("categories",),
    )
    for width, dropped, blocks in ((200, False, False), (95, True, False), (60, True, True)):
        out = io.StringIO()
        render.print_section(section, Console(file=out, width=width, highlight=False))
        text = out.getvalue()
        assert _widest(text) <= width, width
        assert "0f5b1a52-7c8e-5e3c-9e1b-2f9ab1c0ffee" in text and "permitted" in text
        assert ("not shown at" in text) == (dropped and not blocks), width
        if blocks:  # too narrow for a table: a block per row, nothing left out
            assert "user.contact.address.postal_code" in text and "┃" not in text
    assert render.fit_widths([10, 50, 30], [10, 20, 12], 60) == [10, 25, 25]
    assert render.fit_widths([10, 50], [10, 45], 40) is None


def test_consoles_follow_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    console = FittedConsole(file=io.StringIO())
    monkeypatch.setenv("COLUMNS", "83")
    assert console.width == 83
    monkeypatch.delenv("COLUMNS")
    # No terminal and no COLUMNS (a pipe, cron): laid out wide rather than at 80.
    assert console.width == NO_TERMINAL_WIDTH
    # COLUMNS as it is when used, not as it was when the console was made (the CLI's
    # console is made at import).
    monkeypatch.setenv("COLUMNS", "50")
    early = FittedConsole(file=io.StringIO())
    monkeypatch.setenv("COLUMNS", "120")
    assert early.width == 120
