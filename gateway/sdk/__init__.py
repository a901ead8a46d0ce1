"""Client libraries for the two sides of the gateway.

Publishers (systems sending events)::

    from gateway.sdk import Publisher, explain
    with Publisher("localhost:9092") as pub:
        pub.publish(event)            # raises gateway.errors.EventError, nothing sent

    for problem in explain(event):    # what is wrong, in the publisher's own names
        print(problem)

Agents (recipients reading their topic)::

    from gateway.sdk import AgentConsumer, AgentReader
    reader = AgentReader("shipping", Path("shipping.key"), Path("gateway-signing.pub"))
    with AgentConsumer(reader, "localhost:9092") as consumer:
        for msg in consumer:
            ...

:class:`AgentReader` opens single messages (from a file, or any transport);
:class:`AgentConsumer` reads an agent's Kafka topic with it and commits only what was
opened and handled.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.sdk.agent import CONSUMER_DEFAULTS, AgentConsumer, ConsumerStats, Message
    from gateway.sdk.publisher import Publisher, PublishReport
    from gateway.sdk.reader import AgentReader, Received, Rejected, messages_in_file
    from gateway.sdk.validation import explain

# Loaded on first use: `gateway.sdk.reader` alone (what `gateway agent read` needs) then
# does not import the Kafka client.
_WHERE = {
    "CONSUMER_DEFAULTS": "agent",
    "AgentConsumer": "agent",
    "ConsumerStats": "agent",
    "Message": "agent",
    "PublishReport": "publisher",
    "Publisher": "publisher",
    "AgentReader": "reader",
    "Received": "reader",
    "Rejected": "reader",
    "messages_in_file": "reader",
    "explain": "validation",
}

__all__ = [
    "CONSUMER_DEFAULTS",
    "AgentConsumer",
    "AgentReader",
    "ConsumerStats",
    "Message",
    "PublishReport",
    "Publisher",
    "Received",
    "Rejected",
    "explain",
    "messages_in_file",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'gateway.sdk' has no attribute {name!r}")
    return getattr(importlib.import_module(f"gateway.sdk.{module}"), name)
