"""The ``gateway`` command. Each concern's commands live in their own module; errors a user
can act on are printed as one line (no traceback) with exit status 2."""

from __future__ import annotations

import click

from gateway import __version__
from gateway.cli.common import GatewayGroup


@click.group(cls=GatewayGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gateway")
def main() -> None:
    """Disclosure gateway: privacy policy enforcement on a Kafka stream.

    Quick start: `gateway demo` runs everything locally on an embedded broker.
    """


def _register() -> None:
    from gateway.cli import (
        agent,
        audit,
        bench,
        deadletter,
        dev,
        keys,
        log,
        policy,
        replay,
        review,
        stream,
        witness,
    )

    main.add_command(keys.keys)
    main.add_command(policy.policy)
    main.add_command(policy.schemas)
    main.add_command(replay.replay_cmd)
    main.add_command(agent.agent)
    main.add_command(log.log)
    witness.register(log.log)
    main.add_command(review.review)
    main.add_command(audit.audit)
    main.add_command(stream.run_cmd)
    main.add_command(stream.demo_cmd)
    main.add_command(stream.publish_cmd)
    main.add_command(bench.bench_cmd)
    main.add_command(deadletter.deadletter)
    main.add_command(dev.dev)


_register()
