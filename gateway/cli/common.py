"""What the command modules share: error reporting, consoles, and the flags that become
``Settings``.

Consoles are as wide as the terminal (``FittedConsole``), so tables are laid out for the
screen they are read on.

Settings come from the environment (``GATEWAY_*``, or a ``.env`` file); a flag given on
the command line takes precedence over its variable. Every command declares those flags
with the options here and turns them into ``Settings`` with ``settings_from``, so a flag
means the same under every command.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from gateway.errors import GatewayError
from gateway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _invoke_reporting_errors(invoke: Callable[[click.Context], Any], ctx: click.Context) -> Any:
    try:
        return invoke(ctx)
    except GatewayError as e:
        click.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)


class GatewayGroup(click.Group):
    """A group whose errors a user can act on print as one line (no traceback) with exit
    status 2: under `gateway` and when a command module is run on its own."""

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_reporting_errors(super().invoke, ctx)


class GatewayCommand(click.Command):
    """A single command with the error reporting of ``GatewayGroup``."""

    def invoke(self, ctx: click.Context) -> Any:
        return _invoke_reporting_errors(super().invoke, ctx)


NO_TERMINAL_WIDTH: Final = 160


def _on_a_terminal() -> bool:
    for fd in (0, 1, 2):
        try:
            if os.get_terminal_size(fd).columns > 0:
                return True
        except (OSError, ValueError):
            continue
    return False


class FittedConsole(Console):
    """A console as wide as the terminal: ``COLUMNS`` if set, else the terminal's own
    width (read on every use, so a resized window is followed). Output that reaches no
    terminal at all (a pipe from cron, a test) is laid out ``NO_TERMINAL_WIDTH`` wide
    rather than squeezed to 80 columns."""

    def __init__(self, *args: Any, width: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, width=width, **kwargs)
        if width is None:
            # rich fixes the width to COLUMNS as it was when the console was made (at
            # import, for the module's console); read it on every use instead.
            self._width = None

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if (
            self._width is None
            and not self._environ.get("COLUMNS", "").isdigit()
            and not _on_a_terminal()
        ):
            return ConsoleDimensions(NO_TERMINAL_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = FittedConsole(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)


def settings_from(
    policy: Path | None = None,
    keys_dir: Path | None = None,
    db: str | None = None,
    bootstrap: str | None = None,
    **more: Any,
) -> Settings:
    """``Settings`` from the environment, with each flag that was given (not None; for
    ``db`` and ``bootstrap``, not empty) in place of its variable. ``more`` takes other
    settings by name."""
    overrides: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if policy is not None:
        overrides["policy_path"] = policy
    if keys_dir is not None:
        overrides["keys_dir"] = keys_dir
    if db:
        overrides["ledger_url"] = db
    if bootstrap:
        overrides["bootstrap_servers"] = bootstrap
    return Settings(**overrides)


def require_broker(settings: Settings) -> str:
    """The bootstrap address, or a usage error saying how to give one."""
    if not settings.bootstrap_servers:
        raise click.UsageError("no broker: pass --bootstrap or set GATEWAY_BOOTSTRAP_SERVERS")
    return settings.bootstrap_servers


policy_option = click.option(
    "--policy",
    "policy",
    type=click.Path(path_type=Path),
    default=None,
    help="Policy file [env GATEWAY_POLICY_PATH, default agents.yaml].",
)


def _keys_dir_option(*names: str) -> Callable[[F], F]:
    return click.option(
        *names,
        "keys_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Key directory [env GATEWAY_KEYS_DIR, default .gateway/keys].",
    )


keys_dir_option = _keys_dir_option("--keys-dir")
# `gateway keys` manages the directory itself, so it also takes the shorter --dir.
keys_dir_or_dir_option = _keys_dir_option("--dir", "--keys-dir")

db_option = click.option(
    "--db",
    default=None,
    metavar="URL",
    help="Ledger URL, e.g. sqlite:///FILE or postgresql+psycopg://user@host/db"
    " [env GATEWAY_LEDGER_URL, default sqlite:///.gateway/ledger.db].",
)

bootstrap_option = click.option(
    "--bootstrap", default=None, help="Kafka bootstrap address [env GATEWAY_BOOTSTRAP_SERVERS]."
)
