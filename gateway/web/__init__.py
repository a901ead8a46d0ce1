"""The reviewer web page (``gateway review``): the disclosure log's queries, reports and
charts in a browser, read-only and behind a login. See ``gateway.web.app`` for the routes
and ``gateway.web.auth`` for how reviewers are authenticated."""

from gateway.web.app import ReviewConfig, config_from_settings, create_app, start_site
from gateway.web.auth import Credentials, Sessions, credentials_from_settings, hash_password

__all__ = [
    "Credentials",
    "ReviewConfig",
    "Sessions",
    "config_from_settings",
    "create_app",
    "credentials_from_settings",
    "hash_password",
    "start_site",
]
