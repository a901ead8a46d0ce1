"""Options and helpers shared by the command modules."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from gateway.errors import GatewayError
from gateway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


class _OneLineErrors:
    """Errors a user can act on print as one line (no traceback) with exit status 2 —
    under `gateway` and when a command module is run on its own (tests, `python -m`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except GatewayError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)


class GatewayGroup(_OneLineErrors, click.Group):
    pass


class GatewayCommand(_OneLineErrors, click.Command):
    pass


console = Console(highlight=False, soft_wrap=False, width=160)
err_console = Console(stderr=True, highlight=False)


def settings_from(policy: Path | None = None, keys_dir: Path | None = None,
                  **more: Any) -> Settings:
    overrides: dict[str, Any] = {k: v for k, v in more.items() if v is not None}
    if policy is not None:
        overrides["policy_path"] = policy
    if keys_dir is not None:
        overrides["keys_dir"] = keys_dir
    return Settings(**overrides)


def policy_option(f: F) -> F:
    return click.option("--policy", "policy", type=click.Path(path_type=Path),
                        default=None, help="Policy file [env GATEWAY_POLICY_PATH, "
                        "default agents.yaml].")(f)


def keys_dir_option(f: F) -> F:
    return click.option("--keys-dir", type=click.Path(path_type=Path), default=None,
                        help="Key directory [env GATEWAY_KEYS_DIR, default .gateway/keys].")(f)
