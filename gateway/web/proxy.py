"""The review page behind a TLS proxy: what the browser sees (scheme, host, its own
address) when the application itself only sees the proxy.

Two settings, either or both:

* ``GATEWAY_REVIEW_EXTERNAL_ORIGIN`` (e.g. ``https://review.example.com``): the address
  reviewers type. Posts from that origin are accepted as same-origin, and with ``https``
  the session cookie is ``Secure``.
* ``GATEWAY_REVIEW_TRUST_PROXY``: the proxy's addresses or networks (comma-separated,
  e.g. ``127.0.0.1`` or ``10.0.0.0/8``). Only from those peers are ``X-Forwarded-For``,
  ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` believed; from anyone else they are
  ignored, since a client could otherwise pick its own address and dodge the login limits.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from gateway.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# host[:port] or [IPv6]:port, as in a Host header.
_HOST_RE: Final = re.compile(
    r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?"
)


def parse_origin(text: str) -> str | None:
    """``scheme://host[:port]`` (http or https, nothing after the host), normalised to
    lower case without a trailing slash; empty text: None."""
    text = text.strip()
    if not text:
        return None
    hint = (
        f"GATEWAY_REVIEW_EXTERNAL_ORIGIN={text!r} is not an origin: give the scheme and host"
        " reviewers type, e.g. https://review.example.com (no path)"
    )
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ConfigError(hint) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
        or not _HOST_RE.fullmatch(parts.netloc)
    ):
        raise ConfigError(hint)
    return f"{parts.scheme}://{parts.netloc.lower()}"


def parse_proxies(text: str) -> tuple[Network, ...]:
    """The trusted proxies: comma-separated addresses or networks; empty text: none."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError(
                f"GATEWAY_REVIEW_TRUST_PROXY: {item!r} is not an address or network; give"
                " the proxy's addresses, comma-separated, e.g. 127.0.0.1 or 10.0.0.0/8"
            ) from None
    return tuple(out)


def _is_trusted(address: str | None, proxies: Iterable[Network]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in proxies)


def _values(headers: Iterable[str]) -> list[str]:
    return [v.strip() for h in headers for v in h.split(",") if v.strip()]


@dataclass(frozen=True)
class Seen:
    """What the browser sees, where a trusted proxy says so; None: as the app sees it."""

    scheme: str | None = None
    host: str | None = None
    remote: str | None = None


def as_the_browser_sees_it(
    peer: str | None,
    forwarded_for: list[str],
    forwarded_proto: list[str],
    forwarded_host: list[str],
    proxies: tuple[Network, ...],
) -> Seen:
    """The client's address, scheme and host per the ``X-Forwarded-*`` headers, if the
    peer is a trusted proxy. The client is the right-most ``X-Forwarded-For`` entry that
    is not itself a trusted proxy: entries left of it were written by the client."""
    if not proxies or not _is_trusted(peer, proxies):
        return Seen()
    remote = None
    for candidate in reversed(_values(forwarded_for)):
        if _is_trusted(candidate, proxies):
            continue
        try:
            remote = str(ipaddress.ip_address(candidate))
        except ValueError:
            remote = None  # not an address: keep the proxy's
        break
    protos = _values(forwarded_proto)
    scheme = protos[0].lower() if protos and protos[0].lower() in ("http", "https") else None
    hosts = _values(forwarded_host)
    host = hosts[0] if hosts and _HOST_RE.fullmatch(hosts[0]) else None
    return Seen(scheme, host, remote)
