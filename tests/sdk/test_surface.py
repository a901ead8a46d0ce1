"""`gateway.sdk` is the documented library: every exported name resolves, the classes a
developer uses first say what they do, and importing the reader alone stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gateway.sdk


@pytest.mark.parametrize("name", gateway.sdk.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(gateway.sdk, name) is not None


def test_the_first_classes_are_documented_context_managers() -> None:
    from gateway.sdk import AgentConsumer, Publisher

    for cls in (AgentConsumer, Publisher):
        assert hasattr(cls, "__enter__") and hasattr(cls, "__exit__")
    for thing in (AgentConsumer, AgentConsumer.messages, gateway.sdk):
        assert thing.__doc__
    with pytest.raises(AttributeError):
        gateway.sdk.NoSuchThing  # noqa: B018


def test_the_reader_alone_does_not_load_the_kafka_client() -> None:
    code = "import sys, gateway.sdk.reader; print('kafka' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
