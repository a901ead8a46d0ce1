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
    create_agent_keypair,
    gateway_key_paths,
    init_gateway_keys,
    load_pseudonym_key,
    load_signing_key,
    load_verify_key,
    resolve_agent_public_key,
)
from gateway.pipeline import Pipeline
from gateway.policy import Policy, load_policy
from gateway.settings import Settings


@dataclass
class Core:
    settings: Settings
    policy: Policy
    engine: Engine
    pipeline: Pipeline
    signing_key: SigningKey
    verify_key: VerifyKey
    pseudonym_master: bytes


def ensure_demo_keys(settings: Settings, policy: Policy) -> list[str]:
    """Create whatever keys are missing for a local run: the gateway's, and a key pair for
    every agent whose public key file does not exist yet. Returns what was created."""
    created = []
    paths = gateway_key_paths(settings.keys_dir)
    if not paths.signing_key.exists() and not paths.pseudonym_key.exists():
        init_gateway_keys(settings.keys_dir)
        created.append(f"gateway keys in {settings.keys_dir}")
    for name, agent in policy.agents.items():
        ref = agent.public_key
        if ref.startswith("x25519:"):
            continue
        pub = Path(ref) if Path(ref).is_absolute() else settings.keys_dir / ref
        if not pub.exists():
            create_agent_keypair(settings.keys_dir, name)
            created.append(f"agent key pair for {name}")
    return created


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
                f"the matching pair or re-run `gateway keys init --force`")
    master = load_pseudonym_key(settings.pseudonym_key_path)
    sealers = {}
    for name, agent in policy.agents.items():
        try:
            pub = resolve_agent_public_key(agent.public_key, settings.keys_dir)
        except KeyFileError as e:
            raise KeyFileError(f"agent {name!r} in {policy.source}: {e}") from None
        sealers[name] = Sealer(name, pub, signing,
                               rotate_messages=settings.dek_rotate_messages,
                               rotate_seconds=settings.dek_rotate_seconds)
    engine = Engine(policy, Pipeline.pseudonym_keys(policy, master))
    pipeline = Pipeline(engine, sealers, master, max_event_bytes=settings.max_event_bytes)
    return Core(settings, policy, engine, pipeline, signing, verify, master)
