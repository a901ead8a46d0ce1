"""Loading agents.yaml: a bad file stops with a message naming the line and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PolicyError
from gateway.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "agents.yaml").read_text()


def line_of(text: str, needle: str, nth: int = 1) -> int:
    lines = [i + 1 for i, line in enumerate(text.splitlines()) if needle in line]
    return lines[nth - 1]


def broken(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "user.contact.address: send",
            "user.contact.adress: send",
            "user.contact.adress",
            "'user.contact.adress' is not a data category",
        ),
        (
            "essential.service.shipping:",
            "essential.service.shiping:",
            "essential.service.shiping",
            "is not a data use",
        ),
        (
            "subscribes: [order.placed, order.shipped]",
            "subscribes: [order.placed, order.shiped]",
            "order.shiped",
            "unknown event type 'order.shiped'",
        ),
        (
            "user.contact.address.postal_code: {transform: zip3}",
            "user.contact.address.postal_code: {transform: zip}",
            "transform: zip}",
            "unknown transform 'zip'",
        ),
        (
            "user.contact.address.postal_code: {transform: zip3}",
            "user.contact.address.postal_code: {transform: pseudonym, length: 99}",
            "length: 99",
            "length",
        ),
        ("      k: 10", "      k: 3", "k: 3", "threshold k=3 is below the floor of 5"),
        (
            "dimensions: [zip3]",
            "dimensions: [session_id]",
            "dimensions: [session_id]",
            "'session_id' is a direct identifier",
        ),
        (
            "dimensions: [hour]",
            "dimensions: [weather]",
            "dimensions: [weather]",
            "unknown dimension 'weather'",
        ),
        (
            "measures: [count, customers, order_total]",
            "measures: [count, customers, order_total, duration_s]",
            "measures: [count, customers, order_total, duration_s]",
            "measure 'duration_s' does not apply to order.placed",
        ),
        (
            "user.demographic.language: send",
            "user.demographic.language: drop",
            "dimensions: [language]",
            "dimension 'language' is derived from user.demographic.language, which no purpose",
        ),
        ("role: service_provider", "role: friend", "role: friend", "role"),
        (
            "topic: agent.payments",
            "topic: agent.shipping",
            "topic: agent.shipping",
            "already used by agent 'shipping'",
        ),
        ("legal_basis: contract", "legal_basis: because", "legal_basis: because", "legal_basis"),
    ],
)
def test_bad_policy_names_line_and_problem(old: str, new: str, needle: str, message: str) -> None:
    text = broken(old, new)
    nth = 2 if needle == "topic: agent.shipping" else 1
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "agents.yaml")
    assert message in str(e.value)
    assert e.value.line == line_of(text, needle, nth), str(e.value)
    assert str(e.value).startswith(f"agents.yaml:{e.value.line}: ")


def test_invalid_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not valid YAML") as e:
        parse_policy("version: 1\nagents: [\n", "x.yaml")
    assert e.value.line is not None
    with pytest.raises(PolicyError, match="GATEWAY_POLICY_PATH"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match="mapping"):
        parse_policy("- 1\n- 2\n", "x.yaml")


def test_purpose_events_must_be_subscribed() -> None:
    text = broken("events: [order.placed, order.shipped]", "events: [order.placed, site.visit]")
    with pytest.raises(PolicyError, match=r"'site\.visit' is not in the agent's subscribes"):
        parse_policy(text, "agents.yaml")


def test_policy_version_changes_with_content() -> None:
    a = parse_policy(GOOD)
    b = parse_policy(GOOD.replace("Parcel Express Logistics LLC", "Parcel Express LLC"))
    assert a.policy_version != b.policy_version
    assert a.policy_version == parse_policy(GOOD).policy_version


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        (
            "      essential.service.shipping:\n        legal_basis: contract\n",
            "      essential.service.shipping:\n        legal_basis: contract\n"
            "        with_consent: consent\n",
            "with_consent: consent",
            "with_consent is for marketing purposes only",
        ),
        (
            "        legal_basis: legitimate_interests\n        with_consent: consent\n",
            "        legal_basis: consent\n        with_consent: consent\n",
            "with_consent: consent",
            "legal_basis is already consent",
        ),
        (
            "      essential.service.shipping:\n        legal_basis: contract\n",
            "      essential.service.shipping:\n        legal_basis: consent\n",
            "legal_basis: consent",
            "legal_basis consent is for marketing purposes only",
        ),
    ],
)
def test_legal_bases_must_be_ones_the_gateway_can_tell(
    old: str, new: str, needle: str, message: str
) -> None:
    text = broken(old, new)
    with pytest.raises(PolicyError) as e:
        parse_policy(text, "agents.yaml")
    assert message in str(e.value)
    assert e.value.line == line_of(text, needle)
