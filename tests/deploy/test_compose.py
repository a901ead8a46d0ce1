"""The production stack (docker-compose.yml, Dockerfile) checked without a Docker engine.

* The compose file is valid against the Compose Specification's JSON schema, vendored in
  tests/data/compose-spec.json (schema/compose-spec.json of the compose-spec/compose-spec
  repository; no network at test time).
* The stack has what SPEC §2/§3 promise operators: Apache Kafka in KRaft mode, PostgreSQL,
  two gateway workers, the ledger sink, the review page and an example agent consumer.
* Every command a service runs exists in the `gateway` CLI, with options it knows; every
  GATEWAY_* setting passed is one the settings object knows.
* Secrets come from files, never from values in the compose file or the image; the
  image's entrypoint turns NAME_FILE into NAME (run here with a stand-in `gateway`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from gateway.cli import main
from gateway.kafka import provision
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
IMAGE = "disclosure-gateway"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def ours(svc: dict[str, Any]) -> bool:
    return "build" in svc or str(svc.get("image", "")).startswith(IMAGE)


# --- the schema ------------------------------------------------------------------------


def test_the_vendored_schema_is_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert {"service", "secret", "config", "volume", "network"} <= set(schema["definitions"])


def test_the_compose_file_is_valid(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_the_schema_check_can_fail(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["restart_policy"] = "always"  # not a service key
    broken["services"]["kafka"]["ports"] = "29092"  # must be a list
    assert len(list(validator.iter_errors(broken))) >= 2


def test_references_resolve(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for s in svc.get("secrets", []):
            src = s if isinstance(s, str) else s["source"]
            assert src in compose.get("secrets", {}), (name, src)
        for c in svc.get("configs", []):
            src = c if isinstance(c, str) else c["source"]
            assert src in compose.get("configs", {}), (name, src)
        for v in svc.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source", "")
            if not src.startswith((".", "/")):
                assert src in compose.get("volumes", {}), (name, src)
        for dep in svc.get("depends_on", {}):
            assert dep in services, (name, dep)
    for sec in compose["secrets"].values():  # secrets are files the operator makes
        assert set(sec) == {"file"} and sec["file"].startswith("./secrets/")
    assert (ROOT / compose["configs"]["policy"]["file"]).is_file()


# --- the topology ------------------------------------------------------------------------


def role_of(svc: dict[str, Any]) -> str | None:
    cmd = svc.get("command") or []
    return cmd[cmd.index("--role") + 1] if "run" in cmd[:1] and "--role" in cmd else None


def test_the_stack_has_every_part(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert "zookeeper" not in " ".join(services)
    assert services["postgres"]["image"].startswith("postgres:")
    gateways = [s for s in services.values() if ours(s) and role_of(s) == "gateway"]
    workers = sum(int(s.get("deploy", {}).get("replicas", 1)) for s in gateways)
    assert workers == 2
    assert [n for n, s in services.items() if role_of(s) == "ledger"] == ["ledger-sink"]
    assert any(ours(s) and s["command"][0] == "review" for s in services.values())
    assert any(ours(s) and s["command"][:2] == ["agent", "consume"] for s in services.values())
    # Scale-out: never more gateway workers than partitions (the rest would idle).
    partitions = int(services["gateway"]["environment"]["GATEWAY_PARTITIONS"])
    assert partitions >= workers
    # Workers, sink and review page share one ledger; workers and sink one broker.
    for s in services.values():
        e = s.get("environment", {})
        if ours(s) and role_of(s):
            assert e["GATEWAY_BOOTSTRAP_SERVERS"] == "kafka:9092"
            assert sa.make_url(e["GATEWAY_LEDGER_URL"]).host == "postgres"


def test_only_loopback_ports_are_published(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for p in svc.get("ports", []):
            assert str(p).startswith("127.0.0.1:"), (name, p)


# --- commands and settings -----------------------------------------------------------------


# Commands of the image run as `python -m MODULE ...` (the Kafka set-up), with their root.
MODULE_CLIS: dict[str, click.Command] = {"gateway.kafka.provision": provision.main}


def gateway_invocations(svc: dict[str, Any]) -> list[tuple[click.Command, list[str]]]:
    """The `gateway ...` argument lists a service runs (entrypoint = gateway, or a shell
    script calling it), or those of a `python -m MODULE` command line, each with the root
    command that parses them."""
    cmd = svc.get("command") or []
    entry = svc.get("entrypoint")
    if entry is None:
        return [(main, list(cmd))]
    if entry == ["gateway"]:
        return [(main, list(cmd))]
    if entry[:2] == ["python", "-m"]:
        assert entry[2] in MODULE_CLIS, f"no command line known for module {entry[2]}"
        return [(MODULE_CLIS[entry[2]], [*entry[3:], *cmd])]
    assert entry[:2] == ["/bin/sh", "-c"], entry
    script = " ".join(cmd).replace("$$", "$")
    out = []
    for part in re.split(r"&&|;|\bdo\b|\bdone\b|\n", script):
        words = shlex.split(part)
        if words and words[0] == "gateway":
            out.append((main, words[1:]))
    assert out, f"no gateway command in {script!r}"
    return out


def check_cli(args: list[str], root: click.Command = main) -> None:
    """``args`` name an existing command, and every option is one it takes (with a valid
    choice where it has choices)."""
    cmd: click.Command = root
    ctx = click.Context(root)
    rest = list(args)
    while isinstance(cmd, click.Group):
        assert rest, f"{args}: no subcommand"
        name = rest.pop(0)
        sub = cmd.get_command(ctx, name)
        assert sub is not None, f"`gateway {' '.join(args)}`: no command {name!r}"
        cmd = sub
    options = {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
    positional = [p for p in cmd.params if isinstance(p, click.Argument)]
    i = n_pos = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            name, _, inline = tok.partition("=")
            assert name in options, f"`gateway {' '.join(args)}`: unknown option {name}"
            opt = options[name]
            if not opt.is_flag and not inline:
                i += 1
                value = rest[i]
                if isinstance(opt.type, click.Choice):
                    assert value in opt.type.choices, (args, name, value)
        else:
            n_pos += 1
        i += 1
    assert n_pos == len([p for p in positional if p.required]) or n_pos <= len(positional), args


def test_every_service_command_exists_in_the_cli(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for svc in services.values():
        if not ours(svc):
            continue
        for root, args in gateway_invocations(svc):
            check_cli(args, root)
            checked += 1
    assert checked >= 7  # run x2 roles, review, agent consume, keys init/agent/show


def test_the_cli_check_can_fail() -> None:
    with pytest.raises(AssertionError):
        check_cli(["run", "--role", "everything"])
    with pytest.raises(AssertionError):
        check_cli(["agent", "consume", "shipping", "--no-such-option", "x"])
    with pytest.raises(AssertionError):
        check_cli(["serve"])
    with pytest.raises(AssertionError):
        check_cli(["apply", "--no-such-option", "x"], provision.main)


def settings_named(env: dict[str, Any]) -> list[str]:
    names = []
    for key in env:
        if key.startswith("GATEWAY_"):
            names.append(key.removesuffix("_FILE").removeprefix("GATEWAY_").lower())
    return names


def test_every_setting_passed_is_known(services: dict[str, dict[str, Any]]) -> None:
    known = set(Settings.model_fields)
    passed = {
        n for s in services.values() if ours(s) for n in settings_named(s.get("environment", {}))
    }
    dockerfile_env = re.findall(r"\b(GATEWAY_[A-Z0-9_]+)=", DOCKERFILE.read_text())
    passed |= set(settings_named(dict.fromkeys(dockerfile_env)))
    assert passed, "no settings found"
    assert passed <= known, f"unknown settings: {sorted(passed - known)}"
    assert not {n for n in passed if n.startswith(("unsafe_", "test_"))}  # test switches


def test_secrets_are_files_not_values(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|PRIVATE", key):
                assert key.endswith("_FILE"), f"{name}: {key} holds a secret value"
                assert str(value).startswith("/run/secrets/"), (name, key, value)
            if key.endswith("LEDGER_URL"):
                assert sa.make_url(value).password is None, f"{name}: password in {key}"
    text = COMPOSE.read_text()
    assert "BEGIN PRIVATE KEY" not in text and "scrypt$" not in text


# --- the image --------------------------------------------------------------------------


def test_the_image_bakes_in_no_secret_and_drops_root() -> None:
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY\s+(?!<<)(?:--\S+\s+)*(.+)$", text, re.M)
    sources = " ".join(c.rsplit(" ", 1)[0] for c in copies)
    for forbidden in ("secrets", ".key", ".gateway", "ledger.db", ".env"):
        assert forbidden not in sources
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*" and "**/*.key" in ignore and "**/*.db" in ignore


def entrypoint_script() -> str:
    m = re.search(
        r"^COPY <<'EOF' /usr/local/bin/gateway-entrypoint\n(.*?)^EOF$",
        DOCKERFILE.read_text(),
        re.M | re.S,
    )
    assert m, "the entrypoint heredoc is missing"
    return m.group(1)


def test_the_entrypoint_reads_secrets_from_files(tmp_path: Path) -> None:
    script = tmp_path / "gateway-entrypoint"
    script.write_text(entrypoint_script())
    script.chmod(0o755)
    fake = tmp_path / "bin" / "gateway"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "args: $*"\nenv | grep -E "^(GATEWAY_|PGPASSWORD)" | sort\n')
    fake.chmod(0o755)
    secret = tmp_path / "pw"
    secret.write_text("s3cret with spaces\n")
    os.chmod(secret, stat.S_IRUSR)
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "PGPASSWORD_FILE": str(secret),
        "GATEWAY_REVIEWER_PASSWORD_FILE": str(secret),
        "GATEWAY_PARTITIONS": "12",
    }
    out = subprocess.run(
        ["/bin/sh", str(script), "run", "--role", "gateway"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "args: run --role gateway"
    assert "PGPASSWORD=s3cret with spaces" in lines
    assert "GATEWAY_REVIEWER_PASSWORD=s3cret with spaces" in lines
    assert not any("_FILE=" in line for line in lines)  # the indirection is gone
    env["GATEWAY_REVIEWER_PASSWORD_FILE"] = str(tmp_path / "missing")
    bad = subprocess.run(
        ["/bin/sh", str(script), "review"], env=env, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "cannot read" in bad.stderr


def test_the_readme_documents_the_production_topology() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Production deployment" in readme
    section = readme.split("## Production deployment", 1)[1]
    for term in (
        "docker compose",
        "partitions",
        "--scale gateway",
        "KRaft",
        "PostgreSQL",
        "secrets",
        "gateway audit reconcile",
    ):
        assert term in section, term
