"""Client settings that work against every broker we run on: Apache Kafka in production and
the embedded Tansu broker in development (see ``gateway.kafka.admin`` for what was found by
probing Tansu), and the security settings (TLS, SASL) for each. One mapping per client
library, so every consumer and producer the project creates agrees on them."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from gateway.errors import ConfigError
from gateway.settings import Settings

# 6 s is the smallest session timeout a stock Kafka broker accepts
# (group.min.session.timeout.ms), so these settings are valid on real Kafka too, and a
# new group gets its assignment about 3 s after joining on Tansu. Heartbeats at a third
# of it are Kafka's own recommendation.
_SESSION_TIMEOUT_MS: Final = 6000
_HEARTBEAT_INTERVAL_MS: Final = 2000

KAFKA_PYTHON_CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "session_timeout_ms": _SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": _HEARTBEAT_INTERVAL_MS,
    }
)
"""Keyword arguments for ``kafka.KafkaConsumer`` in a consumer group.

Do not poll two members of one group alternately from one thread: on Tansu the second
member then often never gets an assignment. One thread (or process) per member works.
"""

KAFKA_PYTHON_PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {"enable_idempotence": False}
)
"""Keyword arguments for ``kafka.KafkaProducer``: kafka-python 3 is idempotent by default."""

AIOKAFKA_CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "session_timeout_ms": _SESSION_TIMEOUT_MS,
        "heartbeat_interval_ms": _HEARTBEAT_INTERVAL_MS,
    }
)
"""Keyword arguments for ``aiokafka.AIOKafkaConsumer`` in a consumer group."""

PRODUCER_MAX_REQUEST_BYTES: Final = 2 * 1024 * 1024
"""The worker's producer request limit (faust's ``producer_max_request_size``): no single
message may be larger (aiokafka refuses it)."""

AIOKAFKA_PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {"enable_idempotence": False}
)
"""Keyword arguments for ``aiokafka.AIOKafkaProducer`` (already its default; pinned)."""

CONFLUENT_CONSUMER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {
        "session.timeout.ms": _SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": _HEARTBEAT_INTERVAL_MS,
    }
)
"""Entries for a ``confluent_kafka.Consumer`` config dict in a consumer group."""

CONFLUENT_PRODUCER_DEFAULTS: Final[Mapping[str, Any]] = MappingProxyType(
    {"enable.idempotence": False}
)
"""Entries for a ``confluent_kafka.Producer`` config dict (already librdkafka's default)."""


# --- security: TLS and SASL --------------------------------------------------------------
#
# One checked view of the security settings (:class:`KafkaSecurity`), then one function per
# client library that turns it into that library's options. Every client the gateway makes
# must be given these, or it talks PLAINTEXT to a broker that only speaks SASL_SSL.

_TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
_SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


@dataclass(frozen=True)
class KafkaSecurity:
    """The security settings, checked together and with the password read."""

    protocol: str
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.protocol in _TLS_PROTOCOLS

    @property
    def sasl(self) -> bool:
        return self.protocol in _SASL_PROTOCOLS


def _readable_file(path: Path, setting: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{setting}: {path} is not a file (set GATEWAY_{setting.upper()})")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    return path


def _password(settings: Settings) -> str:
    given = settings.sasl_password is not None
    if given and settings.sasl_password_file is not None:
        raise ConfigError(
            "both sasl_password and sasl_password_file are set: keep one "
            "(GATEWAY_SASL_PASSWORD or GATEWAY_SASL_PASSWORD_FILE)"
        )
    if settings.sasl_password is not None:
        password = settings.sasl_password.get_secret_value()
    elif settings.sasl_password_file is not None:
        path = _readable_file(settings.sasl_password_file, "sasl_password_file")
        # Files written by editors and `echo` end in a newline that is not part of it.
        password = path.read_text(encoding="utf-8").rstrip("\r\n")
    else:
        raise ConfigError(
            f"security_protocol {settings.security_protocol} needs a SASL password: set "
            "GATEWAY_SASL_PASSWORD_FILE (or GATEWAY_SASL_PASSWORD)"
        )
    if not password:
        raise ConfigError("the SASL password is empty (GATEWAY_SASL_PASSWORD[_FILE])")
    return password


def kafka_security(settings: Settings) -> KafkaSecurity:
    """The security settings of ``settings``, checked: credentials or TLS files that would be
    ignored are refused (whoever set them believes they are in use), and so are a missing
    password, unreadable files, and PLAIN passwords sent without TLS.

    Raises :class:`ConfigError` naming the setting.
    """
    protocol = settings.security_protocol
    tls = protocol in _TLS_PROTOCOLS
    sasl = protocol in _SASL_PROTOCOLS
    sasl_given = [
        name
        for name in ("sasl_username", "sasl_password", "sasl_password_file")
        if getattr(settings, name) is not None
    ]
    if not sasl and sasl_given:
        raise ConfigError(
            f"{', '.join(sasl_given)} set but security_protocol is {protocol}, which sends no "
            "credentials: set GATEWAY_SECURITY_PROTOCOL=SASL_SSL"
        )
    tls_given = [
        name
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if getattr(settings, name) is not None
    ]
    if not tls and tls_given:
        raise ConfigError(
            f"{', '.join(tls_given)} set but security_protocol is {protocol}, which does not "
            "use TLS: set GATEWAY_SECURITY_PROTOCOL=SASL_SSL (or SSL)"
        )
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ConfigError(
            "a client certificate needs both ssl_certfile and ssl_keyfile "
            "(GATEWAY_SSL_CERTFILE, GATEWAY_SSL_KEYFILE)"
        )
    if not sasl:
        return KafkaSecurity(
            protocol,
            cafile=_opt_file(settings.ssl_cafile, "ssl_cafile"),
            certfile=_opt_file(settings.ssl_certfile, "ssl_certfile"),
            keyfile=_opt_file(settings.ssl_keyfile, "ssl_keyfile"),
            check_hostname=settings.ssl_check_hostname,
        )
    if not settings.sasl_username:
        raise ConfigError(
            f"security_protocol {protocol} needs a SASL user: set GATEWAY_SASL_USERNAME"
        )
    if settings.sasl_mechanism == "PLAIN" and not tls:
        raise ConfigError(
            "SASL PLAIN over SASL_PLAINTEXT sends the password in the clear: use "
            "GATEWAY_SECURITY_PROTOCOL=SASL_SSL, or GATEWAY_SASL_MECHANISM=SCRAM-SHA-512"
        )
    return KafkaSecurity(
        protocol,
        mechanism=settings.sasl_mechanism,
        username=settings.sasl_username,
        password=_password(settings),
        cafile=_opt_file(settings.ssl_cafile, "ssl_cafile"),
        certfile=_opt_file(settings.ssl_certfile, "ssl_certfile"),
        keyfile=_opt_file(settings.ssl_keyfile, "ssl_keyfile"),
        check_hostname=settings.ssl_check_hostname,
    )


def _opt_file(path: Path | None, setting: str) -> Path | None:
    return None if path is None else _readable_file(path, setting)


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS client context for ``security`` (None without TLS): the broker's
    certificate must chain to ``cafile`` (the system's CAs when unset), TLS 1.2 at least,
    and the client certificate when one is configured."""
    if not security.tls:
        return None
    try:
        context = ssl.create_default_context(
            cafile=str(security.cafile) if security.cafile is not None else None
        )
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"ssl_cafile: {security.cafile} holds no usable CA: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Off only on request, and then only the name check: the chain is still verified.
    context.check_hostname = security.check_hostname
    if security.certfile is not None:
        try:
            context.load_cert_chain(str(security.certfile), str(security.keyfile))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"ssl_certfile/ssl_keyfile: {security.certfile} and {security.keyfile} are "
                f"not a PEM certificate and its private key: {exc}"
            ) from exc
    return context


def _python_client_security(settings: Settings) -> dict[str, Any]:
    security = kafka_security(settings)
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options["sasl_mechanism"] = security.mechanism
        options["sasl_plain_username"] = security.username
        options["sasl_plain_password"] = security.password
    return options


def kafka_python_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``kafka.KafkaProducer``, ``KafkaConsumer`` and
    ``KafkaAdminClient``: ``security_protocol``, an ``ssl_context`` with TLS, and the SASL
    mechanism, user and password with SASL."""
    return _python_client_security(settings)


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaProducer`` and ``AIOKafkaConsumer``
    (the same names as kafka-python's; aiokafka takes TLS only as an ``ssl_context``)."""
    return _python_client_security(settings)


def faust_broker_credentials(settings: Settings) -> Any:
    """faust's ``broker_credentials`` (``faust.App(..., broker_credentials=...)``): None for
    PLAINTEXT, ``faust.SSLCredentials`` for SSL, ``faust.SASLCredentials`` (with the TLS
    context for SASL_SSL) for SASL."""
    security = kafka_security(settings)
    if security.protocol == "PLAINTEXT":
        return None
    # faust is imported here: loading it costs about a second, and most users of this
    # module (the SDK, tools) never need it.
    import faust

    context = ssl_context(security)
    if not security.sasl:
        return faust.SSLCredentials(context)
    return faust.SASLCredentials(
        username=security.username,
        password=security.password,
        ssl_context=context,
        mechanism=security.mechanism,
    )


def confluent_security(settings: Settings) -> dict[str, str]:
    """Entries for a ``confluent_kafka`` (librdkafka) config dict."""
    security = kafka_security(settings)
    config = {"security.protocol": security.protocol.lower()}
    if security.tls:
        # librdkafka reads the files itself; building the context checks them the same way
        # for every client, with the same errors.
        ssl_context(security)
        # librdkafka finds no CA bundle by itself on some systems: "probe" looks for one.
        config["ssl.ca.location"] = str(security.cafile) if security.cafile else "probe"
        if security.certfile is not None and security.keyfile is not None:
            config["ssl.certificate.location"] = str(security.certfile)
            config["ssl.key.location"] = str(security.keyfile)
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if security.check_hostname else "none"
        )
    if security.sasl:
        assert security.mechanism and security.username and security.password
        config["sasl.mechanisms"] = security.mechanism
        config["sasl.username"] = security.username
        config["sasl.password"] = security.password
    return config
