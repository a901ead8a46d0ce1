"""The one settings object. Every value can be set by a ``GATEWAY_<NAME>`` environment
variable (or a ``.env`` file); nothing else configures the gateway except the policy file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# What sets one deployment apart from another on the same broker and machine.
DEPLOYMENT_FIELDS = ("policy_path", "keys_dir", "bootstrap_servers", "input_topic",
                     "disclosure_topic", "dead_letter_topic", "app_id", "partitions",
                     "web_port", "ledger_url", "batch_max")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_", env_file=".env", extra="ignore", frozen=True
    )

    # --- policy and keys -------------------------------------------------------------
    policy_path: Path = Field(Path("agents.yaml"), description="The policy file (agents.yaml).")
    keys_dir: Path = Field(
        Path(".gateway/keys"),
        description="Gateway signing key, pseudonym key and (demo only) agent key pairs.",
    )

    # --- Kafka -----------------------------------------------------------------------
    bootstrap_servers: str = Field(
        "", description="Kafka bootstrap address, host:port[,host:port]. Empty: none yet."
    )
    input_topic: str = "gateway.events"
    disclosure_topic: str = "gateway.disclosures"
    dead_letter_topic: str = "gateway.deadletter"
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    app_id: str = "disclosure-gateway"
    max_event_bytes: int = Field(256 * 1024, ge=1024)
    batch_max: int = Field(500, ge=1, description="Events processed per batch at most.")

    # --- test switches (never set in production) --------------------------------------
    unsafe_release_before_log: bool = Field(
        False, description="TEST ONLY: release agent messages before their records are "
        "logged, to prove the fault tests can fail.")
    test_phase_delay_ms: int = Field(
        0, ge=0, description="TEST ONLY: pause between the log and release phases of a batch "
        "(widens the window a crash can hit).")

    # --- crypto ----------------------------------------------------------------------
    dek_rotate_messages: int = Field(10_000, ge=1)
    dek_rotate_seconds: float = Field(3600.0, gt=0)

    # --- disclosure log --------------------------------------------------------------
    ledger_url: str = Field(
        "sqlite:///.gateway/ledger.db",
        description="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://user@host/db",
    )
    checkpoint_every: int = Field(1000, ge=1, description="Records between signed checkpoints.")
    retention_days: int | None = Field(None, ge=1)

    # --- web -------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    review_host: str = "127.0.0.1"
    review_port: int = 8080
    reviewer_user: str | None = None
    reviewer_password: SecretStr | None = None

    def as_env(self, names: tuple[str, ...] | None = None) -> dict[str, str]:
        """``GATEWAY_<NAME>`` variables that make a subprocess (a worker started by the
        tests or the bench) load these same values; ``names`` defaults to what one
        isolated deployment on a shared broker needs."""
        return {f"GATEWAY_{name.upper()}": str(getattr(self, name))
                for name in (names or DEPLOYMENT_FIELDS)}

    @cached_property
    def signing_key_path(self) -> Path:
        return self.keys_dir / "gateway-signing.key"

    @cached_property
    def signing_public_key_path(self) -> Path:
        return self.keys_dir / "gateway-signing.pub"

    @cached_property
    def pseudonym_key_path(self) -> Path:
        return self.keys_dir / "pseudonym.key"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
