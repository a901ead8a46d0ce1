"""Settings -> each Kafka client library's security options (gateway.kafka.clients).

Every mapping is checked for what it hands the library, and where the library can check
options without a broker (aiokafka's and librdkafka's constructors, faust's own
translation to aiokafka), the library is asked too. The connection itself over TLS is
tested in test_tls_broker.py.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.kafka.certs import issue, make_ca
from gateway.kafka.clients import (
    aiokafka_security,
    confluent_security,
    faust_broker_credentials,
    kafka_python_security,
    kafka_security,
    ssl_context,
)
from gateway.settings import Settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("test CA")
    client = issue(ca, "gateway", server=False, client=True)
    files = {
        "ca": (d / "ca.pem", ca.cert_pem()),
        "cert": (d / "client.pem", client.cert_pem()),
        "key": (d / "client.key", client.key_pem()),
        "other_key": (d / "other.key", issue(ca, "x", dns_names=["x"]).key_pem()),
    }
    for path, data in files.values():
        path.write_bytes(data)
    return {k: p for k, (p, _) in files.items()}


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text("s3cret pass\n")  # a trailing newline, as `echo` leaves it
    path.chmod(0o600)
    return path


def sasl_ssl(pki: dict[str, Path], password_file: Path, **more: Any) -> Settings:
    return Settings(
        security_protocol="SASL_SSL",
        sasl_username="gateway",
        sasl_password_file=password_file,
        ssl_cafile=pki["ca"],
        **more,
    )


def check_context(ctx: Any, ca_subject: str = "test CA", hostname: bool = True) -> None:
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED  # the chain is always verified
    assert ctx.check_hostname is hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    subjects = [dict(x[0] for x in c["subject"]).get("commonName") for c in ctx.get_ca_certs()]
    assert subjects == [ca_subject]  # only the configured CA, not the system's


# --- PLAINTEXT: nothing added -----------------------------------------------------------


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    s = Settings()
    assert s.security_protocol == "PLAINTEXT"
    assert kafka_python_security(s) == {"security_protocol": "PLAINTEXT"}
    assert aiokafka_security(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_broker_credentials(s) is None
    assert confluent_security(s) == {"security.protocol": "plaintext"}


# --- SASL_SSL: each library --------------------------------------------------------------


def test_kafka_python_gets_sasl_and_a_verifying_tls_context(
    pki: dict[str, Path], password_file: Path
) -> None:
    kw = kafka_python_security(sasl_ssl(pki, password_file))
    assert set(kw) == {
        "security_protocol",
        "ssl_context",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    }
    assert kw["security_protocol"] == "SASL_SSL"
    assert kw["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kw["sasl_plain_username"] == "gateway"
    assert kw["sasl_plain_password"] == "s3cret pass"  # the file's newline is not part of it
    check_context(kw["ssl_context"])


def test_aiokafka_accepts_its_options(pki: dict[str, Path], password_file: Path) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    kw = aiokafka_security(sasl_ssl(pki, password_file))
    check_context(kw["ssl_context"])

    async def build() -> None:
        # The constructors check the security options (and refuse SSL without a context,
        # SASL without a user) before any connection is made.
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **kw)
        consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", group_id="g", **kw)
        assert producer.client._security_protocol == "SASL_SSL"
        assert producer.client._sasl_mechanism == "SCRAM-SHA-512"
        assert consumer._client._ssl_context is kw["ssl_context"]
        await producer.stop()
        await consumer.stop()

    asyncio.run(build())


def test_faust_credentials_translate_to_the_aiokafka_options(
    pki: dict[str, Path], password_file: Path
) -> None:
    import faust
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    s = sasl_ssl(pki, password_file)
    creds = faust_broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials)
    assert "s3cret" not in repr(creds)
    # What faust's aiokafka driver will hand aiokafka is what aiokafka_security says.
    got = dict(credentials_to_aiokafka_auth(creds))
    want = aiokafka_security(s)
    check_context(got.pop("ssl_context"))
    want.pop("ssl_context")
    assert got == want

    tls_only = Settings(security_protocol="SSL", ssl_cafile=pki["ca"])
    ssl_creds = faust_broker_credentials(tls_only)
    assert isinstance(ssl_creds, faust.SSLCredentials)
    got = dict(credentials_to_aiokafka_auth(ssl_creds))
    check_context(got.pop("ssl_context"))
    assert got == {"security_protocol": "SSL"}


def test_confluent_gets_librdkafka_names_it_accepts(
    pki: dict[str, Path], password_file: Path
) -> None:
    import confluent_kafka

    config = confluent_security(sasl_ssl(pki, password_file))
    assert config == {
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "gateway",
        "sasl.password": "s3cret pass",
        "ssl.ca.location": str(pki["ca"]),
        "ssl.endpoint.identification.algorithm": "https",
    }
    # librdkafka rejects unknown names and bad values, and loads the CA file, at once.
    confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:1", **config})
    with pytest.raises(confluent_kafka.KafkaException):
        confluent_kafka.Producer({"bootstrap.servers": "127.0.0.1:1", "sasl.mechanism.x": "y"})


def test_mutual_tls_loads_the_client_certificate(pki: dict[str, Path]) -> None:
    s = Settings(
        security_protocol="SSL",
        ssl_cafile=pki["ca"],
        ssl_certfile=pki["cert"],
        ssl_keyfile=pki["key"],
    )
    kw = kafka_python_security(s)
    assert set(kw) == {"security_protocol", "ssl_context"}
    check_context(kw["ssl_context"])
    assert confluent_security(s)["ssl.certificate.location"] == str(pki["cert"])
    assert confluent_security(s)["ssl.key.location"] == str(pki["key"])
    mismatched = Settings(**{**s.model_dump(), "ssl_keyfile": pki["other_key"]})
    with pytest.raises(ConfigError, match="ssl_certfile/ssl_keyfile"):
        kafka_python_security(mismatched)


def test_hostname_check_can_be_turned_off_but_not_verification(
    pki: dict[str, Path], password_file: Path
) -> None:
    s = sasl_ssl(pki, password_file, ssl_check_hostname=False)
    check_context(kafka_python_security(s)["ssl_context"], hostname=False)
    assert confluent_security(s)["ssl.endpoint.identification.algorithm"] == "none"


def test_without_a_ca_file_the_system_cas_are_trusted(password_file: Path) -> None:
    s = Settings(security_protocol="SASL_SSL", sasl_username="u", sasl_password_file=password_file)
    ctx = kafka_python_security(s)["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert confluent_security(s)["ssl.ca.location"] == "probe"


def test_sasl_plaintext_has_no_tls_and_an_inline_password_works() -> None:
    s = Settings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="u",
        sasl_password="pw",  # type: ignore[arg-type]  # pydantic turns it into a SecretStr
    )
    assert kafka_python_security(s) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "u",
        "sasl_plain_password": "pw",
    }
    assert "pw" not in repr(kafka_security(s))


def test_settings_come_from_the_environment(
    pki: dict[str, Path], password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_USERNAME": "ledger",
        "SASL_PASSWORD_FILE": str(password_file),
        "SSL_CAFILE": str(pki["ca"]),
    }.items():
        monkeypatch.setenv(f"GATEWAY_{name}", value)
    kw = kafka_python_security(Settings())
    assert kw["sasl_plain_username"] == "ledger" and kw["sasl_plain_password"] == "s3cret pass"
    check_context(kw["ssl_context"])


# --- refused: settings that would be ignored or are incomplete ----------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sasl_username": None}, "needs a SASL user"),
        ({"sasl_password_file": None}, "needs a SASL password"),
        ({"sasl_password": "x"}, "both sasl_password and sasl_password_file"),
        ({"security_protocol": "PLAINTEXT", "ssl_cafile": None}, "sends no credentials"),
        (
            {"security_protocol": "SASL_PLAINTEXT"},
            "ssl_cafile set but security_protocol is SASL_PLAINTEXT",
        ),
        ({"ssl_certfile": "CERT"}, "needs both ssl_certfile and ssl_keyfile"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile: /nonexistent/ca.pem is not a file"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None, "sasl_mechanism": "PLAIN"},
            "sends the password in the clear",
        ),
        ({"ssl_cafile": "CERT_AS_KEY"}, "holds no usable CA"),
    ],
)
def test_incomplete_or_ignored_settings_are_refused(
    pki: dict[str, Path], password_file: Path, overrides: dict[str, Any], message: str
) -> None:
    files = {"CERT": pki["cert"], "CERT_AS_KEY": pki["key"]}
    given = {
        "security_protocol": "SASL_SSL",
        "sasl_username": "gateway",
        "sasl_password_file": password_file,
        "ssl_cafile": pki["ca"],
    }
    given.update({k: files.get(v, v) if isinstance(v, str) else v for k, v in overrides.items()})
    s = Settings(**given)
    with pytest.raises(ConfigError, match=message):
        kafka_python_security(s)
    with pytest.raises(ConfigError, match=message):
        confluent_security(s)


def test_an_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password_file=empty)
    with pytest.raises(ConfigError, match="password is empty"):
        aiokafka_security(s)


def test_ssl_context_is_none_without_tls() -> None:
    assert ssl_context(kafka_security(Settings())) is None
