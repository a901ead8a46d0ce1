"""``gateway review``: serve the reviewer web page over the disclosure log.

Needs reviewer accounts and an existing ledger (there is no default password): one viewer
from GATEWAY_REVIEWER_USER / GATEWAY_REVIEWER_PASSWORD, and/or accounts with roles in
GATEWAY_REVIEWERS_FILE (``user:role:hash`` lines; a ``viewer`` reads, a ``recorder`` may
also record disclosures made outside the stream, for which the server then loads the
signing key, the workers' key and the policy file). Serves on 127.0.0.1:8080 unless told
otherwise (GATEWAY_REVIEW_HOST / GATEWAY_REVIEW_PORT or --host / --port); ``--port 0``
picks a free port and prints the address. ``--hash-password`` reads a password on stdin
and prints the ``scrypt$...`` form to put in GATEWAY_REVIEWER_PASSWORD or the reviewers
file instead of the password itself; it refuses a weak password (too short, too few
different characters, a common one).

Behind a TLS proxy set GATEWAY_REVIEW_EXTERNAL_ORIGIN (the https address reviewers type)
and/or GATEWAY_REVIEW_TRUST_PROXY (the proxy's addresses, whose X-Forwarded-* headers are
then believed); failed logins are limited per client and per user name
(GATEWAY_REVIEW_LOGIN_*), and the log is re-verified every
GATEWAY_REVIEW_VERIFY_EVERY_SECONDS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from contextlib import suppress
from pathlib import Path

import click

from gateway.cli.common import (
    GatewayCommand,
    db_option,
    keys_dir_option,
    policy_option,
    settings_from,
)
from gateway.errors import GatewayError
from gateway.ledger.store import display_url
from gateway.web.app import create_app, start_site
from gateway.web.auth import accounts_from_settings, hash_password, password_problem
from gateway.web.config import ReviewConfig, config_from_settings


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
        f"review page: {url} (reviewers {config.accounts.describe()}; Ctrl-C to stop)",
        err=False,
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
@db_option
@keys_dir_option
@policy_option
@click.option(
    "--hash-password",
    "hash_only",
    is_flag=True,
    help="Read a password from stdin, print its scrypt hash for GATEWAY_REVIEWER_PASSWORD"
    " or a GATEWAY_REVIEWERS_FILE line, and exit.",
)
def review(
    host: str | None,
    port: int | None,
    db: str | None,
    keys_dir: Path | None,
    policy: Path | None,
    hash_only: bool,
) -> None:
    """Serve the reviewer web page: records, reports and charts over the disclosure log,
    behind a login (GATEWAY_REVIEWER_USER / GATEWAY_REVIEWER_PASSWORD, a viewer, and the
    accounts of GATEWAY_REVIEWERS_FILE); recorders may also record disclosures made
    outside the stream.

    From the key directory it reads the pseudonym key (to look up customer ids) and the
    gateway public key (to verify the log); without them the page still works, minus
    those features. From the policy, if its file is there, it takes the agents that have
    no record yet."""
    if hash_only:
        password = _read_password()
        if not password:
            raise click.UsageError("the password is empty")
        problem = password_problem(password)
        if problem is not None:
            raise click.UsageError(problem)
        click.echo(hash_password(password))
        return
    settings = settings_from(
        policy=policy, keys_dir=keys_dir, db=db, review_host=host or None, review_port=port
    )
    accounts = accounts_from_settings(settings)  # before anything else: no default
    host, port = settings.review_host, settings.review_port
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = config_from_settings(settings, accounts)
    try:
        for account in accounts.accounts:
            plain = account.credentials.plain
            weak = password_problem(plain) if plain is not None else None
            if weak:
                click.secho(
                    f"warning: GATEWAY_REVIEWER_PASSWORD is weak: {weak}", fg="yellow", err=True
                )
        for problem in (
            config.pseudonym_problem,
            config.verify_problem,
            config.policy_problem,
            config.recorder_problem,
        ):
            if problem:
                click.secho(f"warning: {problem}", fg="yellow", err=True)
        if not _is_loopback(host):
            click.secho(
                f"warning: serving on {host}, beyond this machine, over plain HTTP; put a TLS"
                " proxy in front of it"
                + (
                    ""
                    if config.external_origin or config.trusted_proxies
                    else " and set GATEWAY_REVIEW_EXTERNAL_ORIGIN (the https address reviewers"
                    " use) or GATEWAY_REVIEW_TRUST_PROXY (the proxy's address), or logins"
                    " through it are refused as cross-site"
                ),
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
        config.close()


if __name__ == "__main__":
    review()
