"""The Kafka set-up step (gateway.kafka.provision): the secrets it makes, the ACL objects
it sends, and how it brings existing ACLs to exactly the table."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.errors import ConfigError
from gateway.kafka import acls, provision
from gateway.kafka.acls import Grant
from gateway.kafka.provision import (
    acl_changes,
    admin_settings,
    kafka_acls,
    make_plan,
    password_path,
    write_secrets,
)
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
AGENTS = {"shipping": "agent.shipping", "email": "agent.email"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- secrets -----------------------------------------------------------------------------------


def test_secrets_make_a_ca_a_broker_keystore_and_a_password_per_user(tmp_path: Path) -> None:
    users = ["admin", "gateway", "agent-shipping"]
    made = write_secrets(tmp_path, users, ["kafka", "localhost"], ["127.0.0.1"])
    assert set(made) == {
        "ca.key",
        "ca.pem",
        "broker.p12",
        "broker.p12.password",
        "users/admin.password",
        "users/gateway.password",
        "users/agent-shipping.password",
    }
    assert mode(tmp_path / "ca.key") == 0o600
    assert mode(tmp_path / "ca.pem") == 0o644
    for name in ("broker.p12", "broker.p12.password", "users/gateway.password"):
        assert mode(tmp_path / name) == 0o640, name
    passwords = {password_path(tmp_path, u).read_text() for u in users}
    assert len(passwords) == 3 and all(len(p) >= 40 for p in passwords)

    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    key, cert, chain = pkcs12.load_key_and_certificates(
        (tmp_path / "broker.p12").read_bytes(), (tmp_path / "broker.p12.password").read_bytes()
    )
    assert key is not None and cert is not None
    cert.verify_directly_issued_by(ca)
    assert [c.subject for c in chain] == [ca.subject]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["kafka", "localhost"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca and basic.path_length == 0


def test_secrets_keep_what_exists_and_add_what_is_missing(tmp_path: Path) -> None:
    write_secrets(tmp_path, ["admin", "gateway"], ["kafka"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    (tmp_path / "broker.p12").unlink()
    made = write_secrets(tmp_path, ["admin", "gateway", "agent-email"], ["kafka"])
    assert set(made) == {"broker.p12", "broker.p12.password", "users/agent-email.password"}
    for path, data in before.items():
        if path.name not in ("broker.p12", "broker.p12.password"):
            assert path.read_bytes() == data, path  # the CA and old passwords are kept
    # The new broker certificate comes from the same CA.
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    _, cert, _ = pkcs12.load_key_and_certificates(
        (tmp_path / "broker.p12").read_bytes(), (tmp_path / "broker.p12.password").read_bytes()
    )
    assert cert is not None
    cert.verify_directly_issued_by(ca)


def test_half_a_ca_is_refused(tmp_path: Path) -> None:
    write_secrets(tmp_path, ["admin"], ["kafka"])
    (tmp_path / "ca.key").unlink()
    with pytest.raises(ConfigError, match="go together"):
        write_secrets(tmp_path, ["admin"], ["kafka"])


# --- the plan and the ACL objects ----------------------------------------------------------------


def test_the_plan_covers_every_principal_and_topic() -> None:
    plan = make_plan(Settings(partitions=12, replication_factor=3), AGENTS, ["orders"])
    assert plan.users == [
        "admin",
        "agent-email",
        "agent-shipping",
        "auditor",
        "gateway",
        "ledger",
        "publisher-orders",
    ]
    assert plan.topics == dict.fromkeys(
        [
            "agent.email",
            "agent.shipping",
            "disclosure-gateway-consent-changelog",
            "gateway.deadletter",
            "gateway.disclosures",
            "gateway.events",
            "gateway.subjects",
        ],
        12,
    )
    assert plan.topic_configs == {
        "disclosure-gateway-consent-changelog": {"cleanup.policy": "compact"}
    }
    assert plan.replication_factor == 3


@pytest.mark.parametrize(
    ("agents", "publishers", "message"),
    [(AGENTS, [], "no publisher"), ({"a b": "t"}, ["x"], "cannot be part of a principal")],
)
def test_bad_names_are_refused(agents: dict[str, str], publishers: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_plan(Settings(), agents, publishers)


def test_acl_objects_are_one_per_operation_allow_literal() -> None:
    from kafka.admin import ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourceType

    grants = [
        Grant("gateway", "topic", "gateway.events", ("Read", "Describe")),
        Grant("gateway", "group", "disclosure-gateway", ("Read",)),
    ]
    objects = kafka_acls(grants)
    seen = {
        (
            a.principal,  # type: ignore[attr-defined]
            a.resource_pattern.resource_type,  # type: ignore[attr-defined]
            a.resource_pattern.resource_name,  # type: ignore[attr-defined]
            a.operation,  # type: ignore[attr-defined]
        )
        for a in objects
    }
    assert seen == {
        ("User:gateway", ResourceType.TOPIC, "gateway.events", ACLOperation.READ),
        ("User:gateway", ResourceType.TOPIC, "gateway.events", ACLOperation.DESCRIBE),
        ("User:gateway", ResourceType.GROUP, "disclosure-gateway", ACLOperation.READ),
    }
    for a in objects:
        assert a.permission_type == ACLPermissionType.ALLOW  # type: ignore[attr-defined]
        assert a.host == "*"  # type: ignore[attr-defined]
        assert a.resource_pattern.pattern_type == ACLResourcePatternType.LITERAL  # type: ignore[attr-defined]


def test_acl_changes_create_the_missing_and_remove_the_rest() -> None:
    wanted = kafka_acls(
        [
            Grant("agent-email", "topic", "agent.email", ("Read", "Describe")),
            Grant("agent-email", "group", "agent-email", ("Read",)),
        ]
    )
    stray = kafka_acls([Grant("agent-email", "topic", "gateway.events", ("Read",))])
    kept = kafka_acls([Grant("agent-email", "group", "agent-email", ("Read",))])
    create, delete = acl_changes(kept | stray, wanted)
    assert set(create) == wanted - kept and len(create) == 2
    assert set(delete) == stray
    assert acl_changes(wanted, wanted) == ([], [])  # applied twice: nothing to do


def test_the_setup_logs_in_as_admin_with_its_own_ca(tmp_path: Path) -> None:
    s = admin_settings(Settings(sasl_username="gateway"), tmp_path)
    assert s.security_protocol == "SASL_SSL" and s.sasl_mechanism == "SCRAM-SHA-512"
    assert s.sasl_username == "admin"
    assert s.sasl_password_file == tmp_path / "users" / "admin.password"
    assert s.ssl_cafile == tmp_path / "ca.pem" and s.ssl_check_hostname


# --- the command line ------------------------------------------------------------------


def test_the_commands_make_secrets_and_show_the_table(tmp_path: Path) -> None:
    runner = CliRunner()
    policy = str(ROOT / "agents.yaml")
    shown = runner.invoke(provision.main, ["show", "--policy", policy, "--publisher", "orders"])
    assert shown.exit_code == 0, shown.output
    rows = acls.parse_markdown(shown.output)
    assert Grant("publisher-orders", "topic", "gateway.events", ("Write", "Describe")) in rows
    assert Grant("agent-shipping", "topic", "agent.shipping", ("Read", "Describe")) in rows

    made = runner.invoke(
        provision.main,
        ["secrets", "--dir", str(tmp_path), "--policy", policy, "--publisher", "orders"],
    )
    assert made.exit_code == 0, made.output
    users = {p.name.removesuffix(".password") for p in (tmp_path / "users").iterdir()}
    assert users == {g.principal for g in rows} | {"admin"}
    missing = runner.invoke(provision.main, ["show", "--policy", policy])
    assert missing.exit_code != 0 and "--publisher" in missing.output


# --- the admin calls (against a recording admin: no broker here speaks ACLs and SCRAM) -------


class RecordingAdmin:
    """Answers like kafka-python's KafkaAdminClient and records what it was asked."""

    def __init__(self, users: dict[str, Any], acls: set[object]) -> None:
        self.users = users
        self.acls = set(acls)
        self.altered: list[Any] = []
        self.created: list[object] = []
        self.deleted: list[object] = []

    def describe_user_scram_credentials(self) -> dict[str, Any]:
        return self.users

    def alter_user_scram_credentials(self, alterations: list[Any]) -> dict[str, str | None]:
        self.altered = alterations
        return {a.user: None for a in alterations}

    def describe_acls(self, acl_filter: Any) -> tuple[list[object], Any]:
        from kafka.errors import NoError

        return sorted(self.acls, key=repr), NoError

    def create_acls(self, acls: list[object]) -> dict[str, list[object]]:
        self.created = acls
        return {"succeeded": acls, "failed": []}

    def delete_acls(self, filters: list[object]) -> list[tuple[object, list[object], Any]]:
        from kafka.errors import NoError, SecurityDisabledError

        self.deleted = filters
        return [(f, [f], NoError if f in self.acls else SecurityDisabledError) for f in filters]


def test_users_are_set_and_strangers_removed_but_never_admin(tmp_path: Path) -> None:
    from kafka.admin import ScramMechanism, UserScramCredentialDeletion

    plan = make_plan(Settings(), {"email": "agent.email"}, ["orders"])
    write_secrets(tmp_path, plan.users, ["kafka"])
    sha512 = [{"mechanism": ScramMechanism.SCRAM_SHA_512, "iterations": 8192}]
    admin = RecordingAdmin(
        {"admin": {"credential_infos": sha512}, "mallory": {"credential_infos": sha512}}, set()
    )
    done = provision.sync_users(admin, plan, tmp_path)
    upserted = [a.user for a in admin.altered if not isinstance(a, UserScramCredentialDeletion)]
    deleted = [a.user for a in admin.altered if isinstance(a, UserScramCredentialDeletion)]
    assert sorted(upserted) == sorted(u for u in plan.users if u != "admin")
    assert deleted == ["mallory"]
    assert done == f"SCRAM users: {len(upserted)} set, 1 credential(s) removed"
    (tmp_path / "users" / "ledger.password").unlink()
    with pytest.raises(ConfigError, match="no password for ledger"):
        provision.sync_users(admin, plan, tmp_path)


def test_acls_converge_to_the_table() -> None:
    grants = [Grant("agent-email", "topic", "agent.email", ("Read", "Describe"))]
    stray = kafka_acls([Grant("agent-email", "topic", "gateway.events", ("Read",))])
    admin = RecordingAdmin({}, stray)
    assert provision.sync_acls(admin, grants) == "ACLs: 2 created, 1 removed"
    assert set(admin.created) == kafka_acls(grants)
    assert set(admin.deleted) == stray
    admin.acls = kafka_acls(grants)
    admin.created, admin.deleted = [], []
    assert provision.sync_acls(admin, grants) == "ACLs: 0 created, 0 removed"
    assert admin.created == [] and admin.deleted == []
