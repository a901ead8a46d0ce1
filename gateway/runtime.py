"""Assembling the core from settings: policy, keys, engine, sealers, pipeline.

Everything that can be wrong with configuration is found here, at start-up, and reported
as a ConfigError that names the file and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.crypto import Sealer, SigningKey, VerifyKey
from gateway.engine import Engine
from gateway.errors import KeyFileError
from gateway.keys import (
    agent_key_paths,
    agent_keypair_paths,
    create_publisher_key,
    demo_agent_keys_dir,
    demo_publisher_keys_dir,
    gateway_key_paths,
    init_gateway_keys,
    init_worker_key,
    issue_agent_keypair,
    load_agent_private_key,
    load_publisher_signing_key,
    load_signing_key,
    load_verify_key,
    load_worker_key,
    make_key_dir,
    resolve_agent_public_key,
    resolve_publisher_path,
    worker_key_path,
    write_key_file,
)
from gateway.pipeline import Pipeline
from gateway.policy import Policy, load_policy
from gateway.pseudonyms import PseudonymKeyring
from gateway.publishers import PublisherRegistry, PublisherSigner, load_registry
from gateway.rotation import load_pseudonym_keyring, signing_handover_chain
from gateway.settings import Settings


@dataclass
class Core:
    settings: Settings
    policy: Policy
    engine: Engine
    pipeline: Pipeline
    signing_key: SigningKey
    verify_key: VerifyKey
    pseudonym_master: bytes  # the current period's master key
    # Every pseudonym period, current first (subject refs of all periods for reports and
    # erasure).
    pseudonyms: PseudonymKeyring
    worker_key: bytes
    publishers: PublisherRegistry
    # The latest hand-over notes leading to the current signing key, oldest first (at
    # most settings.envelope_handovers; in every envelope, so agents that trust one of
    # those earlier keys follow).
    handover: tuple[str, ...] = ()


def ensure_demo_keys(settings: Settings, policy: Policy) -> list[str]:
    """Create whatever keys are missing for a local run: the gateway's, and a key pair for
    every agent whose public key file does not exist yet. Demo agents' private keys go to
    ``agent-keys`` beside the keys directory (``demo_agent_keys_dir``), never inside it.
    Also the workers' shared key, and keys for every publisher whose key or secret file does
    not exist yet (the publishers' signing halves beside the keys directory, in
    ``publisher-keys/``). Returns what was created."""
    created = []
    paths = gateway_key_paths(settings.keys_dir)
    if not paths.signing_key.exists() and not paths.pseudonym_key.exists():
        init_gateway_keys(settings.keys_dir)
        created.append(f"gateway keys in {settings.keys_dir}")
    if not worker_key_path(settings.keys_dir).exists():
        init_worker_key(settings.keys_dir)
        created.append(f"worker key in {settings.keys_dir}")
    for name, spec in policy.publishers.items():
        ref = spec.key if spec.key is not None else spec.secret
        assert ref is not None
        if ref.strip().startswith("ed25519:"):
            continue
        target = resolve_publisher_path(ref, settings.keys_dir)
        if target.exists():
            continue
        hmac_secret = spec.secret is not None
        own = demo_publisher_keys_dir(settings.keys_dir) / (
            name + (".secret" if hmac_secret else ".key")
        )
        if own.exists():
            # The demo publisher kept its key (e.g. the gateway's keys were made afresh):
            # give the gateway what verifies it again rather than a new key.
            data = (
                own.read_bytes()
                if hmac_secret
                else load_publisher_signing_key(own).public_key().to_pem()
            )
            make_key_dir(target.parent)
            write_key_file(target, data, private=hmac_secret, replace=False)
            created.append(f"verification key of publisher {name} (from {own})")
            continue
        create_publisher_key(settings.keys_dir, name, hmac_secret=hmac_secret, gateway_path=ref)
        created.append(f"publisher keys for {name}")
    agent_dir = demo_agent_keys_dir(settings.keys_dir)
    for name, agent in policy.agents.items():
        ref = agent.public_key
        if ref.startswith("x25519:"):
            continue
        pub = Path(ref) if Path(ref).is_absolute() else settings.keys_dir / ref
        if pub.exists():
            continue
        own = agent_keypair_paths(agent_dir, name).private
        if own.exists():
            # The demo agent kept its pair (e.g. the gateway's keys were made afresh):
            # give the gateway its public key again rather than a new pair.
            public = load_agent_private_key(own).public_key()
            target = agent_key_paths(settings.keys_dir, name).public
            write_key_file(target, public.to_pem(), private=False, replace=target.exists())
            created.append(f"public key of agent {name} (from {own})")
            continue
        issue_agent_keypair(name, agent_dir, settings.keys_dir)
        created.append(f"agent key pair for {name} in {agent_dir}")
    return created


def signers_from(policy: Policy, keys_dir: Path) -> dict[str, PublisherSigner]:
    """A signer per event type from the publisher keys in ``keys_dir`` (``NAME.key``, an
    Ed25519 private key, or ``NAME.secret``, an HMAC secret, for each publisher NAME the
    policy declares; the first publisher allowed to send a type signs it). For a process
    that publishes for several back ends (a migration, a load test). Raises
    KeyFileError when no key of any declared publisher is there."""
    out: dict[str, PublisherSigner] = {}
    for name, spec in policy.publishers.items():
        path = keys_dir / (name + (".secret" if spec.secret is not None else ".key"))
        if not path.exists():
            continue
        signer = PublisherSigner.from_file(name, path)
        for event_type in spec.events:
            out.setdefault(event_type, signer)
    if not out:
        raise KeyFileError(
            f"no publisher key in {keys_dir}: expected NAME.key (Ed25519, PEM) or NAME.secret"
            f" (HMAC, hex) for one of the policy's publishers ({', '.join(policy.publishers)});"
            " make them with `gateway keys publisher NAME`"
        )
    return out


def demo_signers(settings: Settings, policy: Policy) -> dict[str, PublisherSigner]:
    """For a local run: a signer per event type, from the demo publishers' signing keys that
    :func:`ensure_demo_keys` made (the first publisher the policy allows for each type)."""
    return signers_from(policy, demo_publisher_keys_dir(settings.keys_dir))


def build_core(settings: Settings, policy: Policy | None = None) -> Core:
    policy = policy or load_policy(settings.policy_path)
    signing = load_signing_key(settings.signing_key_path)
    verify = signing.public_key()
    if settings.signing_public_key_path.exists():
        published = load_verify_key(settings.signing_public_key_path)
        if published != verify:
            raise KeyFileError(
                f"{settings.signing_public_key_path} does not match the signing key "
                f"{settings.signing_key_path}; agents would reject every message. Restore "
                f"the matching pair or re-run `gateway keys init --force`"
            )
    pseudonyms = load_pseudonym_keyring(settings.keys_dir)
    master = pseudonyms.master
    handover = tuple(
        signing_handover_chain(settings.keys_dir, verify, limit=settings.envelope_handovers)
    )
    worker_key = load_worker_key(worker_key_path(settings.keys_dir))
    publishers = load_registry(policy, settings.keys_dir)
    sealers = {}
    for name, agent in policy.agents.items():
        try:
            pub = resolve_agent_public_key(agent.public_key, settings.keys_dir)
        except KeyFileError as e:
            raise KeyFileError(f"agent {name!r} in {policy.source}: {e}") from None
        sealers[name] = Sealer(
            name,
            pub,
            signing,
            rotate_messages=settings.dek_rotate_messages,
            rotate_seconds=settings.dek_rotate_seconds,
            handover=handover,
        )
    engine = Engine(policy, Pipeline.pseudonym_keys(policy, master))
    pipeline = Pipeline(
        engine,
        sealers,
        master,
        worker_key=worker_key,
        publishers=publishers,
        max_event_bytes=settings.max_event_bytes,
    )
    return Core(
        settings,
        policy,
        engine,
        pipeline,
        signing,
        verify,
        master,
        pseudonyms,
        worker_key,
        publishers,
        handover,
    )
