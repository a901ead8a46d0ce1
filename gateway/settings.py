"""The one settings object. Every value can be set by a ``GATEWAY_<NAME>`` environment
variable (or a ``.env`` file); nothing else configures the gateway except the policy file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What sets one deployment apart from another on the same broker and machine.
DEPLOYMENT_FIELDS = (
    "policy_path",
    "keys_dir",
    "bootstrap_servers",
    "input_topic",
    "disclosure_topic",
    "dead_letter_topic",
    "subjects_topic",
    "app_id",
    "partitions",
    "web_port",
    "ledger_url",
    "batch_max",
)


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
    subjects_topic: str = Field(
        "gateway.subjects",
        description="The gateway's own re-partition topic: events that arrived on another"
        " partition than their customer's are forwarded here, keyed by customer id, to be"
        " decided on the customer's partition. Workers only; no publisher writes to it.",
    )
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)
    app_id: str = "disclosure-gateway"
    max_event_bytes: int = Field(256 * 1024, ge=1024)
    batch_max: int = Field(500, ge=1, description="Events processed per batch at most.")
    # A batch's first event waits for the whole batch to be decided before its record
    # goes out: a batch is cut where deciding it is estimated (at the recent cost per
    # event) to take this long, however many events a fetch brought. 50 ms cuts a
    # backlog's batches to about 200 events (measured: 7 % less throughput than 500;
    # 20 ms, about 80 events: 18 % less) and leaves the small batches of a steady load
    # alone.
    batch_budget_ms: float = Field(
        50.0,
        gt=0,
        description="Deciding one batch is estimated to take this long at most (ms); a "
        "fetched pile is cut into batches that fit (and into batch_max events at most).",
    )
    verify_threads: int = Field(
        2,
        ge=1,
        description="Threads checking a batch's publisher signatures before it is decided "
        "(the public-key work runs outside the interpreter lock, so they use other cores); "
        "1: checked one by one as each event is admitted. Up to the worker's cores.",
    )
    stop_timeout_seconds: float = Field(
        25.0,
        gt=0,
        description="A worker told to stop (SIGTERM, SIGINT) exits after this long even if "
        "its shutdown still waits for a broker that does not answer; nothing is lost (input "
        "not yet acknowledged is decided again, under the same ids, by whoever takes the "
        "partitions). Keep it below the orchestrator's grace period (Kubernetes: 30 s).",
    )
    aggregate_idle_seconds: float = Field(
        30.0,
        gt=0,
        description="Aggregate-only agents: a subject partition whose latest event time has "
        "not moved for this long counts as caught up, so it does not hold every window "
        "back (see gateway.stream.aggregation). Keep it well above a rebalance (session "
        "timeout plus restore) and above the longest a partition with a backlog waits for "
        "its next batch.",
    )
    # faust asks the broker to hold an empty fetch for up to 1.5 s. Kafka answers as soon
    # as data arrives; Tansu (the embedded broker) does not, so an event that arrived
    # while the partitions were idle waited up to 1.5 s (measured: p50 1.6 s at 1k
    # events/s). Much shorter is no good either: Tansu's memory storage scans a
    # partition's record batches on each fetch within the wait, and with 5 ms a consumer
    # stalls for good once a partition holds some thousands of batches (reproduced with a
    # plain aiokafka consumer). 25 ms keeps the added latency to a few ms, survives a
    # million-event backlog, and costs an idle worker ~5 % of a core (and Tansu as much).
    # Under load nothing changes: every fetch finds data at once.
    fetch_max_wait_ms: int = Field(
        25,
        ge=1,
        description="How long the broker may hold an input fetch that finds no data (ms). "
        "Against Kafka, which answers as soon as data arrives, a longer wait only saves "
        "idle polling.",
    )

    # --- Kafka security: TLS and SASL, for every Kafka client ----------------------------
    # gateway.kafka.clients checks these together and turns them into each client
    # library's options (faust, aiokafka, kafka-python, confluent-kafka).
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How clients talk to the brokers; production: SASL_SSL.",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism (with SASL_SSL or SASL_PLAINTEXT)."
    )
    sasl_username: str | None = Field(None, description="SASL user: this process's principal.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    sasl_password_file: Path | None = Field(
        None, description="A file holding the SASL password (instead of sasl_password)."
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM CA certificate(s) to trust for the brokers; empty: system CAs."
    )
    ssl_certfile: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile.")
    ssl_check_hostname: bool = Field(
        True, description="Check that the broker's certificate names the host connected to."
    )
    # --- end of Kafka security ----------------------------------------------------------

    # --- crypto ----------------------------------------------------------------------
    dek_rotate_messages: int = Field(10_000, ge=1)
    dek_rotate_seconds: float = Field(3600.0, gt=0)
    # Every envelope carries these, so each costs every message ~0.5 kB (le: what a reader
    # accepts in one envelope).
    envelope_handovers: int = Field(
        2,
        ge=0,
        le=16,
        description="Signing-key hand-overs each key envelope carries, the latest ones: an"
        " agent holding one of the last N gateway keys follows a rotation on its own; one"
        " holding an older key needs KEYS_DIR/history/signing/handover-chain (--handover).",
    )

    # --- disclosure log --------------------------------------------------------------
    ledger_url: str = Field(
        "sqlite:///.gateway/ledger.db",
        description="SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://user@host/db",
    )
    checkpoint_every: int = Field(1000, ge=1, description="Records between signed checkpoints.")
    retention_days: int | None = Field(None, ge=1)
    sink_stall_seconds: float = Field(
        60.0,
        gt=0,
        description="The ledger sink counts as stalled (health 503) when records wait on the"
        " disclosure topic and it made no progress for this many seconds.",
    )

    # --- log trust (log checkpoints, witnesses) -------------------------------------------
    log_origin: str = Field(
        "disclosure-gateway.local/log",
        description="The log's name in its signed checkpoints (C2SP origin line): a"
        " schema-less URL without spaces or '+'. A log keeps it for life.",
    )

    @field_validator("log_origin")
    @classmethod
    def _check_log_origin(cls, value: str) -> str:
        if not value or any(c.isspace() or c == "+" or not c.isprintable() for c in value):
            raise ValueError("must be non-empty, without spaces, '+' or control characters")
        if value.startswith("disclosure-gateway/"):
            raise ValueError("disclosure-gateway/... is reserved; use e.g. example.com/log")
        return value

    # --- end log trust --------------------------------------------------------------------

    # --- web -------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    review_host: str = "127.0.0.1"
    review_port: int = 8080
    reviewer_user: str | None = None
    reviewer_password: SecretStr | None = None
    reviewers_file: Path | None = Field(
        None,
        description="Reviewer accounts, one 'user:role:scrypt-hash' line each (role viewer or"
        " recorder; hashes from `gateway review --hash-password`), besides or instead of"
        " GATEWAY_REVIEWER_USER, who is a viewer.",
    )

    # --- review page: proxy, login limits, verification (gateway review) -------------
    review_external_origin: str = Field(
        "",
        description="The origin reviewers type when a TLS proxy is in front, e.g."
        " https://review.example.com: posts from it are same-origin; https makes cookies"
        " Secure.",
    )
    review_trust_proxy: str = Field(
        "",
        description="Addresses or networks of the proxy (comma-separated, e.g. 127.0.0.1)"
        " whose X-Forwarded-For/-Proto/-Host headers are believed. Empty: none.",
    )
    review_login_account_failures: int = Field(
        5, ge=1, description="Failed logins per user name within the window; more: 429."
    )
    review_login_client_failures: int = Field(
        20, ge=1, description="Failed logins per client address within the window; more: 429."
    )
    review_login_window_seconds: float = Field(
        900.0, gt=0, description="Seconds a failed login counts against the limits."
    )
    review_login_max_pending: int = Field(
        4, ge=1, description="Password checks in flight at once; more are refused (429)."
    )
    review_verify_every_seconds: float = Field(
        300.0, ge=0, description="Seconds between verifications of the log; 0: only on demand."
    )
    # --- end of the review page's settings --------------------------------------------

    def as_env(self, names: tuple[str, ...] | None = None) -> dict[str, str]:
        """``GATEWAY_<NAME>`` variables that make a subprocess (a worker started by the
        tests or the bench) load these same values; ``names`` defaults to what one
        isolated deployment on a shared broker needs."""
        return {
            f"GATEWAY_{name.upper()}": str(getattr(self, name))
            for name in (names or DEPLOYMENT_FIELDS)
        }

    @cached_property
    def signing_key_path(self) -> Path:
        return self.keys_dir / "gateway-signing.key"

    @cached_property
    def signing_public_key_path(self) -> Path:
        return self.keys_dir / "gateway-signing.pub"

    @cached_property
    def pseudonym_key_path(self) -> Path:
        return self.keys_dir / "pseudonym.key"
