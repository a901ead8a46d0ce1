"""The reviewer web page (``gateway review``): the disclosure log's queries, reports and
charts in a browser, behind a login; read-only, but for recorder accounts recording
disclosures made outside the stream.

One job per module: ``app`` assembles the application and lists its routes, ``config``
holds what it serves from, ``middleware`` authenticates and turns errors into answers,
``proxy`` sees requests as the browser made them behind a TLS proxy, ``pages``,
``disclosures`` (the recorders' form) and ``login`` are the handlers, ``throttle`` limits
login attempts, ``responses`` renders pages, JSON and downloads, ``params`` validates query
parameters, ``queries`` and ``charts`` make the dashboard, and ``auth`` checks accounts,
their roles and session cookies."""

from gateway.web.app import create_app, start_site
from gateway.web.auth import (
    Account,
    Accounts,
    Credentials,
    Sessions,
    accounts_from_settings,
    credentials_from_settings,
    hash_password,
)
from gateway.web.config import ReviewConfig, config_from_settings

__all__ = [
    "Account",
    "Accounts",
    "Credentials",
    "ReviewConfig",
    "Sessions",
    "accounts_from_settings",
    "config_from_settings",
    "create_app",
    "credentials_from_settings",
    "hash_password",
    "start_site",
]
