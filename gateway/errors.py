"""Every error the gateway raises on purpose.

All derive from :class:`GatewayError`, so a caller can catch the whole family. Messages
say what is wrong and, where the user can act, how to fix it. No message ever contains a
raw field value from an event (they may be logged or dead-lettered).

    GatewayError
    ├── ConfigError                 settings, files, keys: stops start-up
    │   ├── PolicyError             agents.yaml is invalid (carries file and line)
    │   ├── TaxonomyError           unknown or badly declared category / use / subject
    │   └── KeyFileError            a key file is missing, unreadable or of the wrong kind
    ├── EventError                  an incoming event is rejected (dead-lettered)
    │   ├── EventNotJSON
    │   ├── EventTooLarge
    │   ├── UnknownEventType
    │   └── SchemaViolation         wrong types, missing or unknown fields
    ├── CryptoError                 a message cannot be trusted by an agent
    │   ├── SignatureError          key envelope not signed by the gateway
    │   ├── ContextMismatch         message bound to another agent / event / key
    │   └── DecryptionError         wrong key or tampered ciphertext
    ├── LedgerError                 disclosure log problems
    │   └── VerificationError       the log or a proof does not verify (names the record)
    └── BrokerError                 the Kafka broker cannot be reached or managed
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of all gateway errors."""


class ConfigError(GatewayError):
    """Configuration that stops start-up: the message names the setting or file."""


class PolicyError(ConfigError):
    """An invalid policy file. ``path`` and ``line`` point at the problem when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        self.problem = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class TaxonomyError(ConfigError):
    """A data category, data use or data subject that the taxonomy does not know."""


class KeyFileError(ConfigError):
    """A key file that is missing, unreadable or of the wrong type."""


class EventError(GatewayError):
    """An incoming event that cannot be processed. ``reason`` is a short machine code."""

    reason = "invalid"

    def __init__(self, message: str, *, event_id: str | None = None,
                 event_type: str | None = None):
        self.event_id = event_id
        self.event_type = event_type
        super().__init__(message)


class EventNotJSON(EventError):
    reason = "not_json"


class EventTooLarge(EventError):
    reason = "too_large"


class UnknownEventType(EventError):
    reason = "unknown_type"


class SchemaViolation(EventError):
    reason = "schema"


class CryptoError(GatewayError):
    """A message an agent must not trust."""


class SignatureError(CryptoError):
    pass


class ContextMismatch(CryptoError):
    pass


class DecryptionError(CryptoError):
    pass


class LedgerError(GatewayError):
    """Disclosure log store problems."""


class VerificationError(LedgerError):
    """The log, a checkpoint or a proof failed verification. ``record_id`` names the culprit."""

    def __init__(self, message: str, *, record_id: str | None = None,
                 index: int | None = None):
        self.record_id = record_id
        self.index = index
        super().__init__(message)


class BrokerError(GatewayError):
    """The Kafka broker is unreachable or the embedded broker could not start."""
