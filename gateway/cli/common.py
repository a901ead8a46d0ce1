"""Options and helpers shared by the command modules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from gateway.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

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
