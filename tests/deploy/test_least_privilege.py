"""The production Kafka is locked down, read from docker-compose.yml without a Docker engine.

* The README's table of principals and ACLs is the table the set-up step applies
  (gateway.kafka.acls), and what the set-up step creates for this stack's agents and
  publishers is exactly that table, expanded.
* Each principal gets only what it needs; the example agent cannot read raw events or
  the consent changelog.
* The broker: no listener that clients can reach without SASL_SSL, the KRaft
  StandardAuthorizer denying what no ACL allows, one super user (admin).
* Every gateway, agent and publisher service logs in over SASL_SSL as its own principal,
  and holds no other principal's password.
* deploy/kafka/start.sh turns the compose environment and the secrets into the broker's
  configuration (run here with stand-ins for Kafka's scripts).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.kafka import acls
from gateway.kafka.acls import Grant, Names
from gateway.kafka.provision import kafka_acls, make_plan, policy_agents
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
README = ROOT / "README.md"
START = ROOT / "deploy" / "kafka" / "start.sh"
SECRET_DIR = "/run/secrets/"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def kafka_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: str(v) for k, v in services["kafka"]["environment"].items()}


def settings_of(env: dict[str, Any]) -> Settings:
    """The Settings a container with this environment loads (GATEWAY_* only)."""
    fields = {
        k.removeprefix("GATEWAY_").lower(): v
        for k, v in env.items()
        if k.startswith("GATEWAY_") and not k.endswith("_FILE")
    }
    return Settings(**fields)


def setup_args(services: dict[str, dict[str, Any]], name: str) -> list[str]:
    svc = services[name]
    assert svc["entrypoint"] == ["python", "-m", "gateway.kafka.provision"]
    return list(svc["command"])


def option_values(args: list[str], option: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == option]


@pytest.fixture(scope="module")
def publishers(services: dict[str, dict[str, Any]]) -> list[str]:
    return option_values(setup_args(services, "kafka-setup"), "--publisher")


@pytest.fixture(scope="module")
def agents() -> dict[str, str]:
    return policy_agents(ROOT / "agents.yaml")


@pytest.fixture(scope="module")
def names(services: dict[str, dict[str, Any]]) -> Names:
    return Names.from_settings(settings_of(services["kafka-setup"]["environment"]))


@pytest.fixture(scope="module")
def granted(
    services: dict[str, dict[str, Any]], agents: dict[str, str], publishers: list[str]
) -> list[Grant]:
    """What the set-up step creates for this stack."""
    settings = settings_of(services["kafka-setup"]["environment"])
    return make_plan(settings, agents, publishers).grants


def readme_rows() -> list[Grant]:
    section = README.read_text().split("## Production deployment", 1)[1]
    return acls.parse_markdown(section)


def of(grants: list[Grant], principal: str) -> dict[tuple[str, str], set[str]]:
    return {(g.resource, g.name): set(g.operations) for g in grants if g.principal == principal}


# --- one table: README = code = what the set-up step creates -----------------------------


def test_the_readme_table_is_the_one_the_setup_applies(names: Names) -> None:
    assert readme_rows() == acls.table(names)


def test_the_setup_creates_exactly_the_readme_table(
    granted: list[Grant], agents: dict[str, str], publishers: list[str]
) -> None:
    from_readme = acls.expand(readme_rows(), agents, publishers)
    assert granted == from_readme
    # ... down to the ACL objects sent to the broker.
    assert kafka_acls(granted) == kafka_acls(from_readme)
    assert len(kafka_acls(granted)) == sum(len(g.operations) for g in granted)


def test_both_setup_steps_know_the_same_principals(services: dict[str, dict[str, Any]]) -> None:
    secrets_args = setup_args(services, "kafka-secrets")
    apply_args = setup_args(services, "kafka-setup")
    assert option_values(secrets_args, "--publisher") == option_values(apply_args, "--publisher")
    assert option_values(secrets_args, "--dir") == option_values(apply_args, "--dir")
    # Both read the policy the workers use.
    for name in ("kafka-secrets", "kafka-setup"):
        targets = [c["target"] for c in services[name]["configs"]]
        assert targets == ["/etc/gateway/agents.yaml"]


def test_the_changelog_named_is_the_workers(services: dict[str, dict[str, Any]]) -> None:
    from gateway.stream.consent_store import changelog_topic

    settings = settings_of(services["gateway"]["environment"])
    assert Names.from_settings(settings).changelog_topic == changelog_topic(settings)


def test_the_table_check_can_fail(names: Names) -> None:
    with pytest.raises(ValueError):
        acls.parse_markdown("no table here")
    rows = acls.table(names)
    text = acls.render_markdown(rows)
    assert acls.parse_markdown(text) == rows
    widened = text.replace("| Read, Describe |", "| Read, Write, Describe |", 1)
    assert acls.parse_markdown(widened) != rows
    with pytest.raises(ValueError, match="unknown operation"):
        acls.parse_markdown(text.replace("| Read |", "| All |", 1))


# --- least privilege -------------------------------------------------------------------------


def test_only_read_write_describe_on_literal_names(granted: list[Grant]) -> None:
    for g in granted:
        assert g.resource in ("topic", "group"), g  # nothing on the cluster
        assert set(g.operations) <= {"Read", "Write", "Describe"}, g  # no Create/Alter/All
        assert "*" not in g.name and "<" not in g.name, g
        assert g.principal != acls.ADMIN  # admin is a super user, it needs no ACL


def test_each_publisher_writes_the_input_topic_and_nothing_else(
    granted: list[Grant], names: Names, publishers: list[str]
) -> None:
    assert publishers
    for p in publishers:
        assert of(granted, f"publisher-{p}") == {
            ("topic", names.input_topic): {"Write", "Describe"}
        }


def test_each_agent_reads_its_own_topic_in_its_own_group_only(
    granted: list[Grant], agents: dict[str, str]
) -> None:
    assert len(agents) >= 5
    for agent, topic in agents.items():
        assert of(granted, f"agent-{agent}") == {
            ("topic", topic): {"Read", "Describe"},
            ("group", f"agent-{agent}"): {"Read"},
        }


def test_the_example_agent_cannot_read_raw_events_or_the_changelog(
    granted: list[Grant], names: Names, services: dict[str, dict[str, Any]]
) -> None:
    user = services["agent-shipping"]["environment"]["GATEWAY_SASL_USERNAME"]
    assert user == "agent-shipping"
    mine = of(granted, user)
    forbidden = [
        names.input_topic,
        names.changelog_topic,
        names.subjects_topic,
        names.disclosure_topic,
        names.dead_letter_topic,
    ]
    assert not [t for t in forbidden if ("topic", t) in mine]
    assert [n for (r, n) in mine if r == "topic"] == ["agent.shipping"]


def test_the_workers_read_input_and_write_outputs_without_creating_topics(
    granted: list[Grant], names: Names, agents: dict[str, str]
) -> None:
    want = {
        ("topic", names.input_topic): {"Read", "Describe"},
        ("topic", names.subjects_topic): {"Read", "Write", "Describe"},
        ("topic", names.changelog_topic): {"Read", "Write", "Describe"},
        ("topic", names.disclosure_topic): {"Write", "Describe"},
        ("topic", names.dead_letter_topic): {"Write", "Describe"},
        ("group", names.gateway_group): {"Read"},
    }
    want |= {("topic", t): {"Write", "Describe"} for t in agents.values()}
    assert of(granted, "gateway") == want


def test_the_sink_reads_disclosures_and_writes_only_erasure_notices(
    granted: list[Grant], names: Names, agents: dict[str, str]
) -> None:
    want = {
        ("topic", names.disclosure_topic): {"Read", "Describe"},
        ("group", names.ledger_group): {"Read"},
    }
    want |= {("topic", t): {"Write", "Describe"} for t in agents.values()}
    assert of(granted, "ledger") == want
    assert names.ledger_group != names.gateway_group


def test_who_may_touch_the_sensitive_topics(granted: list[Grant], names: Names) -> None:
    def who(topic: str, op: str) -> set[str]:
        return {
            g.principal
            for g in granted
            if g.name == topic and g.resource == "topic" and op in g.operations
        }

    assert who(names.input_topic, "Read") == {"gateway", "auditor"}
    assert who(names.changelog_topic, "Read") == {"gateway"}
    assert who(names.changelog_topic, "Write") == {"gateway"}
    assert who(names.subjects_topic, "Read") == {"gateway"}
    assert who(names.disclosure_topic, "Write") == {"gateway"}
    assert who(names.disclosure_topic, "Read") == {"ledger", "auditor"}
    assert all(p.startswith("publisher-") for p in who(names.input_topic, "Write"))


def test_the_auditor_only_reads(granted: list[Grant]) -> None:
    assert all("Write" not in g.operations for g in granted if g.principal == "auditor")


# --- the broker ---------------------------------------------------------------------------------


def listeners(env: dict[str, str]) -> dict[str, tuple[str, int]]:
    out = {}
    for item in env["KAFKA_LISTENERS"].split(","):
        name, _, rest = item.partition("://")
        host, _, port = rest.rpartition(":")
        out[name] = (host, int(port))
    return out


def protocols(env: dict[str, str]) -> dict[str, str]:
    return dict(i.split(":") for i in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))


def test_clients_reach_only_sasl_ssl_listeners(
    kafka_env: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    found = listeners(kafka_env)
    proto = protocols(kafka_env)
    assert set(found) == set(proto)
    controllers = set(kafka_env["KAFKA_CONTROLLER_LISTENER_NAMES"].split(","))
    for name, (host, _port) in found.items():
        if name in controllers:
            # Reachable from inside the broker's own container only.
            assert host == "127.0.0.1", (name, host)
        else:
            assert proto[name] == "SASL_SSL", name
    advertised = {i.split("://")[0] for i in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert advertised and all(proto[n] == "SASL_SSL" for n in advertised)
    assert kafka_env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert "PLAINTEXT" not in {proto[n] for n in found if n not in controllers}
    published = {int(str(p).rsplit(":", 1)[1]) for p in services["kafka"].get("ports", [])}
    assert published
    for port in published:
        (name,) = [n for n, (_, p) in found.items() if p == port]
        assert proto[name] == "SASL_SSL", name


def test_the_authorizer_denies_what_no_acl_allows(kafka_env: dict[str, str]) -> None:
    assert kafka_env["KAFKA_AUTHORIZER_CLASS_NAME"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert kafka_env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert kafka_env["KAFKA_SUPER_USERS"] == "User:admin"
    assert kafka_env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka_env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "SCRAM-SHA-512"
    assert kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert kafka_env["KAFKA_SSL_CLIENT_AUTH"] == "none"  # clients prove who they are by SCRAM


def test_the_broker_gets_its_tls_material_and_admin_login_as_secrets(
    services: dict[str, dict[str, Any]], kafka_env: dict[str, str], compose: dict[str, Any]
) -> None:
    kafka = services["kafka"]
    mounted = set(kafka["secrets"])
    for key in ("KAFKA_SSL_KEYSTORE_LOCATION", "KAFKA_SSL_TRUSTSTORE_LOCATION"):
        assert kafka_env[key].startswith(SECRET_DIR)
        assert kafka_env[key].removeprefix(SECRET_DIR) in mounted
    assert mounted == {
        "kafka_ca",
        "kafka_keystore",
        "kafka_keystore_password",
        "kafka_admin_password",
    }
    assert compose["secrets"]["kafka_admin_password"]["file"].endswith("/users/admin.password")
    assert not [k for k in kafka_env if "PASSWORD" in k or "JAAS" in k]
    script = next(c for c in kafka["configs"] if c["source"] == "kafka_start")["target"]
    assert kafka["command"] == ["/bin/sh", script]
    assert compose["configs"]["kafka_start"]["file"] == "./deploy/kafka/start.sh"


# --- the clients ---------------------------------------------------------------------------------


def principal_for(svc: dict[str, Any]) -> str | None:
    """The principal a service must log in as, from what it runs; None if it uses no Kafka."""
    cmd = [str(c) for c in svc.get("command") or []]
    if cmd[:1] == ["run"]:
        return {"gateway": "gateway", "ledger": "ledger"}[cmd[cmd.index("--role") + 1]]
    if cmd[:2] == ["agent", "consume"]:
        return f"agent-{cmd[2]}"
    if cmd[:1] == ["publish"]:
        return "publisher-*"
    if cmd[:2] == ["audit", "reconcile"]:
        return "auditor"
    return None


def kafka_clients(services: dict[str, dict[str, Any]]) -> dict[str, tuple[str, dict[str, Any]]]:
    out = {}
    for name, svc in services.items():
        principal = principal_for(svc)
        if principal is not None:
            out[name] = (principal, svc)
    return out


def check_clients(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], principals: set[str]
) -> None:
    """Every service that uses Kafka logs in over SASL_SSL, checking the broker against
    the set-up's CA, as its own principal, with its own password and no other's."""
    users = []
    for name, (principal, svc) in kafka_clients(services).items():
        env = svc["environment"]
        assert env["GATEWAY_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["GATEWAY_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["GATEWAY_SSL_CAFILE"] == SECRET_DIR + "kafka_ca", name
        assert "GATEWAY_SSL_CHECK_HOSTNAME" not in env, name  # the default: checked
        user = env["GATEWAY_SASL_USERNAME"]
        if principal == "publisher-*":
            assert user.startswith("publisher-"), name
        else:
            assert user == principal, name
        assert user in principals, name
        users.append(user)
        password = env["GATEWAY_SASL_PASSWORD_FILE"]
        assert password.startswith(SECRET_DIR), name
        secret = password.removeprefix(SECRET_DIR)
        kafka_secrets = {s for s in svc["secrets"] if s.startswith("kafka_")}
        assert kafka_secrets == {"kafka_ca", secret}, name
        assert compose["secrets"][secret]["file"] == f"./secrets/kafka/users/{user}.password"
        settings = settings_of(env)
        assert settings.security_protocol == "SASL_SSL" and settings.sasl_username == user
    assert len(users) == len(set(users)), "two services share a principal"


def test_every_kafka_client_logs_in_over_sasl_ssl_as_itself(
    services: dict[str, dict[str, Any]], compose: dict[str, Any], granted: list[Grant]
) -> None:
    clients = kafka_clients(services)
    assert {"gateway", "ledger-sink", "agent-shipping", "publisher-orders", "auditor"} <= set(
        clients
    )
    check_clients(services, compose, {g.principal for g in granted})


@pytest.mark.parametrize(
    "change",
    [
        {"GATEWAY_SASL_USERNAME": "gateway"},  # someone else's principal
        {"GATEWAY_SECURITY_PROTOCOL": "PLAINTEXT"},
        {"GATEWAY_SASL_PASSWORD_FILE": "/run/secrets/kafka_gateway_password"},
    ],
)
def test_the_client_check_can_fail(
    services: dict[str, dict[str, Any]],
    compose: dict[str, Any],
    granted: list[Grant],
    change: dict[str, str],
) -> None:
    broken = dict(services)
    agent = dict(broken["agent-shipping"])
    agent["environment"] = {**agent["environment"], **change}
    broken["agent-shipping"] = agent
    with pytest.raises(AssertionError):
        check_clients(broken, compose, {g.principal for g in granted})


def test_only_the_broker_and_the_setup_step_hold_admin_secrets(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, svc in services.items():
        holds = "kafka_admin_password" in (svc.get("secrets") or [])
        mounts_all = any(str(v).startswith("./secrets/kafka:") for v in svc.get("volumes") or [])
        if name == "kafka":
            assert holds
        elif name in ("kafka-secrets", "kafka-setup"):
            assert mounts_all and "setup" in svc["profiles"]
        else:
            assert not holds and not mounts_all, name


# --- the broker's start script ----------------------------------------------------------------


@pytest.fixture
def fake_kafka(tmp_path: Path) -> Path:
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    for tool in ("kafka-storage.sh", "kafka-server-start.sh"):
        script = home / "bin" / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{tmp_path}/calls"\n')
        script.chmod(0o755)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "kafka_admin_password").write_text("admin-pw\n")
    (secrets / "kafka_keystore_password").write_text("store-pw")
    return tmp_path


def run_start(tmp: Path, kafka_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        **kafka_env,
        "KAFKA_HOME": str(tmp / "kafka"),
        "KAFKA_SECRETS_DIR": str(tmp / "secrets"),
        "KAFKA_CONFIG_DIR": str(tmp / "config"),
        "KAFKA_HEAP_OPTS": "-Xmx1g",  # the JVM's: not a broker property
    }
    return subprocess.run(
        ["/bin/sh", str(START)], env=env, capture_output=True, text=True, timeout=30
    )


def properties(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        assert key not in out, f"{key} twice"
        out[key] = value
    return out


def test_the_start_script_configures_the_broker(
    fake_kafka: Path, kafka_env: dict[str, str]
) -> None:
    done = run_start(fake_kafka, kafka_env)
    assert done.returncode == 0, done.stderr
    conf = fake_kafka / "config" / "server.properties"
    assert conf.stat().st_mode & 0o077 == 0  # secrets inside: owner only
    props = properties(conf)
    assert (
        props["listener.security.protocol.map"] == kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    )
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:admin"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["ssl.keystore.location"] == "/run/secrets/kafka_keystore"
    assert props["node.id"] == "1" and props["log.dirs"] == "/var/lib/kafka/data"
    assert "heap.opts" not in props and "cluster.id" not in props
    assert props["ssl.keystore.password"] == props["ssl.key.password"] == "store-pw"
    internal = props["listener.name.internal.scram-sha-512.sasl.jaas.config"]
    assert 'username="admin" password="admin-pw";' in internal  # the newline is dropped
    assert props["listener.name.external.scram-sha-512.sasl.jaas.config"].endswith(" required;")
    assert 'user_admin="admin-pw"' in props["listener.name.controller.plain.sasl.jaas.config"]
    # Every listener the map names has its SASL login.
    for name, proto in protocols(kafka_env).items():
        if proto.startswith("SASL"):
            assert any(
                k.startswith(f"listener.name.{name.lower()}.") and k.endswith("jaas.config")
                for k in props
            )
    calls = (fake_kafka / "calls").read_text().splitlines()
    assert calls[0].startswith(f"kafka-storage.sh format --cluster-id {kafka_env['CLUSTER_ID']} ")
    assert "--ignore-formatted --add-scram SCRAM-SHA-512=[name=admin,password=admin-pw]" in calls[0]
    assert calls[1] == f"kafka-server-start.sh {conf}"
    admin = properties(fake_kafka / "config" / "admin.properties")
    assert admin["security.protocol"] == "SASL_SSL"
    assert admin["ssl.truststore.location"].endswith("/kafka_ca")
    health = " ".join(services_health(kafka_env))
    assert "admin.properties" in health


def services_health(kafka_env: dict[str, str]) -> list[str]:
    svc = yaml.safe_load(COMPOSE.read_text())["services"]["kafka"]
    return [str(x) for x in svc["healthcheck"]["test"]]


def test_the_start_script_refuses_missing_secrets(
    fake_kafka: Path, kafka_env: dict[str, str]
) -> None:
    os.remove(fake_kafka / "secrets" / "kafka_admin_password")
    done = run_start(fake_kafka, kafka_env)
    assert done.returncode == 2
    assert "kafka_admin_password is missing" in done.stderr and "kafka-secrets" in done.stderr
    assert not (fake_kafka / "calls").exists()  # Kafka never started
