"""Set-up of the locked-down Kafka cluster of docker-compose.yml (its ``--profile setup``
services), in two steps:

``secrets``, before the broker first starts
    A private CA, the broker's certificate and PKCS#12 keystore, and a random password
    for every principal of :mod:`gateway.kafka.acls`, under one directory. Files that
    exist are kept, so running it again only adds what is missing (a new agent's
    password, a deleted certificate).
``apply``, with the broker running
    Logged in as ``admin`` (SASL_SSL, SCRAM-SHA-512): the SCRAM user of every principal,
    every topic (with the partitions and replication of the settings; the consent
    changelog compacted), and exactly the ACLs of :func:`gateway.kafka.acls.table`:
    missing ones are created, any other ACL and any other SCRAM user (but ``admin``) is
    removed. Running it again changes nothing.

Run as ``python -m gateway.kafka.provision secrets|apply|show``.

The secrets directory::

    ca.pem                    the CA certificate every client trusts (0644)
    ca.key                    the CA's private key, for issuing certificates (0600)
    broker.p12                the broker's key and certificate chain (0640)
    broker.p12.password       its password (0640)
    users/<principal>.password  one SCRAM password per principal, admin included (0640)

0640 with the group of the set-up user (the gateway image's 10001): the broker's
container reads its files as a member of that group.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import click

from gateway.cli.common import settings_from
from gateway.errors import BrokerError, ConfigError, GatewayError
from gateway.kafka import acls
from gateway.kafka.acls import ADMIN, Grant, Names
from gateway.kafka.certs import issue, make_ca, pkcs12_keystore
from gateway.settings import Settings

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
KEYSTORE: Final = "broker.p12"
KEYSTORE_PASSWORD: Final = "broker.p12.password"
USERS: Final = "users"
SCRAM_MECHANISM: Final = "SCRAM-SHA-512"
# Kafka's minimum for SCRAM is 4096; the cost is paid once per connection.
SCRAM_ITERATIONS: Final = 8192
_PRIVATE: Final = 0o600
_SHARED: Final = 0o640
_PUBLIC: Final = 0o644


def password_path(secrets_dir: Path, principal: str) -> Path:
    return secrets_dir / USERS / f"{principal}.password"


# --- what the cluster must hold ----------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The users, topics and ACLs one deployment needs."""

    grants: list[Grant]
    users: list[str]
    topics: dict[str, int]
    topic_configs: dict[str, dict[str, str]]
    replication_factor: int


def make_plan(settings: Settings, agents: Mapping[str, str], publishers: Sequence[str]) -> Plan:
    """The plan for ``settings``' topic names, the policy's ``agents`` (name -> topic)
    and ``publishers``."""
    if not publishers:
        raise ConfigError("no publisher given: name each with --publisher NAME")
    for name in [*agents, *publishers]:
        if not name or not all(c.isalnum() or c in "-_" for c in name):
            raise ConfigError(f"{name!r} cannot be part of a principal name: use a-z 0-9 - _")
    names = Names.from_settings(settings)
    grants = acls.expand(acls.table(names), agents, publishers)
    return Plan(
        grants=grants,
        users=acls.principals(grants),
        topics=dict.fromkeys(acls.topics(grants), settings.partitions),
        topic_configs={names.changelog_topic: {"cleanup.policy": "compact"}},
        replication_factor=settings.replication_factor,
    )


def policy_agents(policy_path: Path) -> dict[str, str]:
    """Agent name -> topic, from the policy file."""
    from gateway.policy import load_policy

    return {name: agent.topic for name, agent in load_policy(policy_path).agents.items()}


def kafka_acls(grants: Iterable[Grant]) -> set[object]:
    """kafka-python ``ACL`` objects: one per principal, resource and operation; ALLOW,
    from any host, on the literal name."""
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    out: set[object] = set()
    for g in grants:
        pattern = ResourcePattern(
            ResourceType[g.resource.upper()], g.name, ACLResourcePatternType.LITERAL
        )
        for op in g.operations:
            out.add(
                ACL(
                    principal=f"User:{g.principal}",
                    host="*",
                    operation=ACLOperation[op.upper()],
                    permission_type=ACLPermissionType.ALLOW,
                    resource_pattern=pattern,
                )
            )
    return out


def acl_changes(
    existing: Iterable[object], wanted: set[object]
) -> tuple[list[object], list[object]]:
    """(to create, to delete) that turn ``existing`` into exactly ``wanted``."""
    have = set(existing)
    return sorted(wanted - have, key=repr), sorted(have - wanted, key=repr)


# --- step 1: secrets -----------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int) -> bool:
    """Write ``data`` to a new file with ``mode``; False (and nothing written) if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def write_secrets(
    secrets_dir: Path,
    users: Sequence[str],
    broker_dns: Sequence[str],
    broker_ips: Sequence[str] = (),
) -> list[str]:
    """Make what is missing under ``secrets_dir``; return the names of the files made."""
    (secrets_dir / USERS).mkdir(parents=True, exist_ok=True)
    made: list[str] = []
    ca_key, ca_cert = secrets_dir / CA_KEY, secrets_dir / CA_CERT
    if ca_key.exists() != ca_cert.exists():
        raise ConfigError(
            f"{ca_key} and {ca_cert} go together: restore the missing one, or delete both "
            "(and every certificate they issued) to start a new CA"
        )
    if not ca_key.exists():
        ca = make_ca()
        _write_new(ca_key, ca.key_pem(), _PRIVATE)
        _write_new(ca_cert, ca.cert_pem(), _PUBLIC)
        made += [CA_KEY, CA_CERT]
    if not (secrets_dir / KEYSTORE).exists():
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from gateway.kafka.certs import Issued

        key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{ca_key} is not the EC key this set-up makes")
        ca = Issued(key, x509.load_pem_x509_certificate(ca_cert.read_bytes()))
        if not broker_dns:
            raise ConfigError("the broker certificate needs a name: give --broker-dns")
        broker = issue(
            ca, broker_dns[0], dns_names=broker_dns, ip_addresses=broker_ips, client=True
        )
        password = secrets.token_urlsafe(32)
        (secrets_dir / KEYSTORE_PASSWORD).unlink(missing_ok=True)
        _write_new(secrets_dir / KEYSTORE_PASSWORD, password.encode(), _SHARED)
        _write_new(secrets_dir / KEYSTORE, pkcs12_keystore(broker, ca, password.encode()), _SHARED)
        made += [KEYSTORE, KEYSTORE_PASSWORD]
    for user in users:
        path = password_path(secrets_dir, user)
        if _write_new(path, secrets.token_urlsafe(32).encode(), _SHARED):
            made.append(f"{USERS}/{path.name}")
    return made


# --- step 2: apply -------------------------------------------------------------------------


def admin_settings(settings: Settings, secrets_dir: Path) -> Settings:
    """``settings`` logged in as ``admin`` over SASL_SSL with the set-up's CA."""
    return settings.model_copy(
        update={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_username": ADMIN,
            "sasl_password": None,
            "sasl_password_file": password_path(secrets_dir, ADMIN),
            "ssl_cafile": secrets_dir / CA_CERT,
            "ssl_check_hostname": True,
        }
    )


def _read_password(secrets_dir: Path, user: str) -> str:
    path = password_path(secrets_dir, user)
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"no password for {user} at {path} ({exc.strerror}): run the `secrets` step first"
        ) from exc
    if not password:
        raise ConfigError(f"{path} is empty")
    return password


def sync_users(admin: Any, plan: Plan, secrets_dir: Path) -> str:
    """Set every principal's SCRAM password from its file and remove every other user's
    credentials (``admin``'s is the broker's own, made when its storage was formatted,
    and kept). ``admin`` is a kafka-python ``KafkaAdminClient``."""
    from kafka.admin import UserScramCredentialDeletion, UserScramCredentialUpsertion

    upserts = [
        UserScramCredentialUpsertion(
            user, SCRAM_MECHANISM, _read_password(secrets_dir, user), SCRAM_ITERATIONS
        )
        for user in plan.users
        if user != ADMIN
    ]
    deletions = [
        UserScramCredentialDeletion(user, info["mechanism"])
        for user, described in admin.describe_user_scram_credentials().items()
        if user not in plan.users and user != ADMIN
        for info in described.get("credential_infos") or []
    ]
    result = admin.alter_user_scram_credentials(upserts + deletions)
    errors = {user: error for user, error in result.items() if error}
    if errors:
        raise BrokerError(f"SCRAM users not changed: {errors}")
    return f"SCRAM users: {len(upserts)} set, {len(deletions)} credential(s) removed"


def sync_acls(admin: Any, grants: Iterable[Grant]) -> str:
    """Create the ACLs of ``grants`` that are missing and delete every other ACL."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import NoError

    everything = ACLFilter(
        principal=None,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    existing, _ = admin.describe_acls(everything)
    create, delete = acl_changes(existing, kafka_acls(grants))
    if create:
        result = admin.create_acls(create)
        if result["failed"]:
            raise BrokerError(f"ACLs not created: {result['failed']}")
    if delete:
        for acl_filter, _deleted, error_type in admin.delete_acls(delete):
            if error_type is not NoError:  # kafka-python returns the error's class
                raise BrokerError(f"ACL not deleted: {acl_filter}: {error_type.__name__}")
    return f"ACLs: {len(create)} created, {len(delete)} removed"


def apply(plan: Plan, settings: Settings, secrets_dir: Path, timeout: float = 120) -> list[str]:
    """Bring the cluster at ``settings.bootstrap_servers`` to ``plan``, logged in as
    admin; returns what was done, one line per step. Raises BrokerError if the broker
    refuses any of it."""
    from gateway.kafka.admin import admin_client, ensure_topics, wait_for_broker
    from gateway.kafka.clients import kafka_python_security

    bootstrap = settings.bootstrap_servers
    security = kafka_python_security(admin_settings(settings, secrets_dir))
    wait_for_broker(bootstrap, timeout=timeout, security=security)
    done: list[str] = []
    with admin_client(bootstrap, 30, security) as admin:
        done.append(sync_users(admin, plan, secrets_dir))
    ensure_topics(
        bootstrap,
        plan.topics,
        plan.replication_factor,
        timeout=timeout,
        configs=plan.topic_configs,
        security=security,
    )
    done.append(f"topics: {len(plan.topics)} present")
    with admin_client(bootstrap, 30, security) as admin:
        done.append(sync_acls(admin, plan.grants))
    return done


# --- the commands --------------------------------------------------------------------------

_dir_option = click.option(
    "--dir",
    "secrets_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/secrets"),
    show_default=True,
    help="The secrets directory.",
)
_policy_option = click.option(
    "--policy",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The policy (its agents) [env GATEWAY_POLICY_PATH].",
)
_publisher_option = click.option(
    "--publisher",
    "publishers",
    multiple=True,
    required=True,
    help="A publisher's name (principal publisher-NAME); repeat for each.",
)


def _plan(
    policy: Path | None, publishers: Sequence[str], **overrides: Any
) -> tuple[Plan, Settings]:
    settings = settings_from(**overrides)
    agents = policy_agents(policy or settings.policy_path)
    return make_plan(settings, agents, publishers), settings


@click.group()
def main() -> None:
    """Set up the production Kafka cluster: secrets, then users, topics and ACLs."""


@main.command("secrets")
@_dir_option
@_policy_option
@_publisher_option
@click.option(
    "--broker-dns",
    multiple=True,
    default=("kafka", "localhost"),
    show_default=True,
    help="A DNS name clients reach the broker by (the certificate's names); repeat.",
)
@click.option(
    "--broker-ip", multiple=True, default=("127.0.0.1",), show_default=True, help="Likewise, an IP."
)
def secrets_cmd(
    secrets_dir: Path,
    policy: Path | None,
    publishers: tuple[str, ...],
    broker_dns: tuple[str, ...],
    broker_ip: tuple[str, ...],
) -> None:
    """Make the CA, the broker's keystore and every principal's password (missing ones only)."""
    plan, _ = _plan(policy, publishers)
    made = write_secrets(secrets_dir, plan.users, broker_dns, broker_ip)
    click.echo(f"made {len(made)} file(s) in {secrets_dir}" + "".join(f"\n  {m}" for m in made))


@main.command("apply")
@_dir_option
@_policy_option
@_publisher_option
@click.option("--bootstrap", help="Kafka bootstrap address [env GATEWAY_BOOTSTRAP_SERVERS].")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait.")
def apply_cmd(
    secrets_dir: Path,
    policy: Path | None,
    publishers: tuple[str, ...],
    bootstrap: str | None,
    timeout: float,
) -> None:
    """Create the SCRAM users, topics and ACLs (as admin), and remove any others."""
    plan, settings = _plan(policy, publishers, bootstrap_servers=bootstrap)
    if not settings.bootstrap_servers:
        raise click.UsageError("no broker: pass --bootstrap or set GATEWAY_BOOTSTRAP_SERVERS")
    for line in apply(plan, settings, secrets_dir, timeout):
        click.echo(line)
    click.echo(acls.render_markdown(plan.grants), nl=False)


@main.command("show")
@_policy_option
@_publisher_option
def show_cmd(policy: Path | None, publishers: tuple[str, ...]) -> None:
    """Print every principal's ACLs for this deployment (a Markdown table)."""
    plan, _ = _plan(policy, publishers)
    click.echo(acls.render_markdown(plan.grants), nl=False)


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.exit(1)
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
