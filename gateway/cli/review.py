"""``gateway review``: serve the reviewer web page over the disclosure log.

Needs reviewer credentials (GATEWAY_REVIEWER_USER, GATEWAY_REVIEWER_PASSWORD; there is no
default password) and an existing ledger. Serves on 127.0.0.1:8080 unless told otherwise
(GATEWAY_REVIEW_HOST / GATEWAY_REVIEW_PORT or --host / --port); ``--port 0`` picks a free
port and prints the address. ``--hash-password`` reads a password on stdin and prints the
``scrypt$...`` form to put in GATEWAY_REVIEWER_PASSWORD instead of the password itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

import click

from gateway.cli.common import GatewayCommand
from gateway.errors import GatewayError
from gateway.ledger.store import display_url
from gateway.settings import Settings
from gateway.web.app import ReviewConfig, config_from_settings, create_app, start_site
from gateway.web.auth import credentials_from_settings, hash_password


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _read_password() -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    # One line, as `echo "$PW" | gateway review --hash-password` writes it.
    return sys.stdin.readline().rstrip("\r\n")


async def _serve(config: ReviewConfig, host: str, port: int) -> None:
    app = create_app(config)
    runner, url = await start_site(app, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError):  # not on Windows
            loop.add_signal_handler(sig, stop.set)
    click.echo(
        f"review page: {url} (reviewer {config.credentials.user}; Ctrl-C to stop)", err=False
    )
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


@click.command("review", cls=GatewayCommand)
@click.option(
    "--host",
    default=None,
    help="Address to listen on [env GATEWAY_REVIEW_HOST, default 127.0.0.1].",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port; 0 picks a free one [env GATEWAY_REVIEW_PORT, default 8080].",
)
@click.option(
    "--db",
    default=None,
    metavar="URL",
    help="Ledger URL [env GATEWAY_LEDGER_URL, default sqlite:///.gateway/ledger.db].",
)
@click.option(
    "--keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Key directory: the pseudonym key (customer-id lookups) and the gateway public key"
    " (verification) [env GATEWAY_KEYS_DIR].",
)
@click.option(
    "--hash-password",
    "hash_only",
    is_flag=True,
    help="Read a password from stdin, print its scrypt hash for GATEWAY_REVIEWER_PASSWORD,"
    " and exit.",
)
def review(
    host: str | None, port: int | None, db: str | None, keys_dir: Path | None, hash_only: bool
) -> None:
    """Serve the read-only reviewer web page: records, reports and charts over the
    disclosure log, behind a login (GATEWAY_REVIEWER_USER / GATEWAY_REVIEWER_PASSWORD)."""
    if hash_only:
        password = _read_password()
        if not password:
            raise click.UsageError("the password is empty")
        click.echo(hash_password(password))
        return
    overrides: dict[str, Any] = {}
    if db:
        overrides["ledger_url"] = db
    if keys_dir is not None:
        overrides["keys_dir"] = keys_dir
    settings = Settings(**overrides)
    credentials = credentials_from_settings(settings)  # before anything else: no default
    host = host or settings.review_host
    port = settings.review_port if port is None else port
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = config_from_settings(settings, credentials)
    try:
        for problem in (config.pseudonym_problem, config.verify_problem):
            if problem:
                click.secho(f"warning: {problem}", fg="yellow", err=True)
        if not _is_loopback(host):
            click.secho(
                f"warning: serving on {host}, beyond this machine, over plain HTTP; put a TLS"
                " proxy in front of it",
                fg="yellow",
                err=True,
            )
        click.echo(f"ledger: {display_url(settings.ledger_url)}", err=True)
        try:
            asyncio.run(_serve(config, host, port))
        except OSError as exc:
            raise GatewayError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port"
            ) from exc
        except KeyboardInterrupt:
            pass
    finally:
        config.store.close()


if __name__ == "__main__":
    review()
