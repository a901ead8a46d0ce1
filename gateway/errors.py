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
    │   ├── SchemaViolation         wrong types, missing or unknown fields
    │   ├── CardNumberFound         a value looks like a payment card number
    │   ├── PublisherError          the event's publisher cannot be trusted with it
    │   │   ├── Unsigned            no publisher signature headers
    │   │   ├── UnknownPublisher    a publisher the policy does not declare
    │   │   ├── BadSignature        the signature does not verify (or is malformed)
    │   │   └── PublisherNotAllowed the publisher may not send this event type
    │   ├── RoutingError            a message on the gateway's own re-partition topic that
    │   │   │                       no worker forwarded, or on the wrong partition
    │   │   ├── ForgedForward       its worker MAC is missing or does not verify
    │   │   └── Misrouted           its customer is decided on another partition
    │   ├── StateConflict           valid, but it contradicts the subject's state
    │   │   ├── Superseded          a state change older than what it would override
    │   │   ├── SubjectErased       a state change for a subject already erased
    │   │   ├── SubjectTypeMismatch the declared subject type is not the subject's
    │   │   └── EventIdReused       an event id seen before with other content
    │   └── InternalError           processing the event failed on a bug (dead-lettered,
    │                               named by the exception type only)
    ├── CryptoError                 a message cannot be trusted by an agent
    │   ├── SignatureError          key envelope not signed by the gateway
    │   ├── ContextMismatch         message bound to another agent / event / key
    │   ├── DecryptionError         wrong key or tampered ciphertext
    │   └── KeyMismatch             an agent's own keys cannot open messages addressed to it
    │                               (the agent consumer stops rather than skip them)
    ├── LedgerError                 disclosure log problems
    │   └── VerificationError       the log or a proof does not verify (names the record)
    ├── DisclosureRejected          a disclosure made outside the stream cannot be recorded
    │                               as given (the message names the field and the fix)
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

    def __init__(self, message: str, *, event_id: str | None = None, event_type: str | None = None):
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


class CardNumberFound(EventError):
    """A value in the event looks like a payment card number (Luhn-valid, 13 to 19 digits).
    Events carry the payment processor's token instead; the event is never forwarded."""

    reason = "card_number"


class PublisherError(EventError):
    """The event cannot be attributed to a publisher allowed to send it; nothing of it is
    applied."""


class Unsigned(PublisherError):
    reason = "unsigned"


class UnknownPublisher(PublisherError):
    reason = "unknown_publisher"


class BadSignature(PublisherError):
    reason = "bad_signature"


class PublisherNotAllowed(PublisherError):
    reason = "publisher_not_allowed"


class RoutingError(EventError):
    """A message on the re-partition topic (``GATEWAY_SUBJECTS_TOPIC``) that cannot be taken
    as an event a worker forwarded to its customer's partition."""


class ForgedForward(RoutingError):
    reason = "forged_forward"


class Misrouted(RoutingError):
    """Only a misconfiguration gives this (workers disagreeing on GATEWAY_PARTITIONS, or a
    topic with another partition count): every worker forwards to the partition it
    computes."""

    reason = "misrouted"


class StateConflict(EventError):
    """A valid event that the subject's state makes inapplicable: it is dead-lettered so
    that its publisher can see why it had no effect."""


class Superseded(StateConflict):
    """A consent, erasure or subject-type change every field of which the subject's state
    already holds from a later event."""

    reason = "superseded"


class SubjectErased(StateConflict):
    """A consent or subject-type change for a subject who asked to be erased (erasure is
    final)."""

    reason = "subject_erased"


class SubjectTypeMismatch(StateConflict):
    reason = "subject_type_mismatch"


class EventIdReused(StateConflict):
    reason = "event_id_reused"


class InternalError(EventError):
    """Processing a valid event raised an unexpected exception: a bug, not bad input. The
    message names the exception type only; the exception's own message could quote event
    data."""

    reason = "internal_error"


class CryptoError(GatewayError):
    """A message an agent must not trust."""


class SignatureError(CryptoError):
    pass


class ContextMismatch(CryptoError):
    pass


class DecryptionError(CryptoError):
    pass


class KeyMismatch(CryptoError):
    """The agent's keys do not open a message addressed to it: its private key is not the
    one the gateway seals for, or the gateway key it trusts did not sign the message.
    ``position`` names the message (topic[partition]@offset)."""

    def __init__(self, message: str, *, position: str | None = None):
        self.position = position
        super().__init__(message)


class LedgerError(GatewayError):
    """Disclosure log store problems."""


class VerificationError(LedgerError):
    """The log, a checkpoint or a proof failed verification. ``record_id`` names the culprit."""

    def __init__(self, message: str, *, record_id: str | None = None, index: int | None = None):
        self.record_id = record_id
        self.index = index
        super().__init__(message)


class DisclosureRejected(GatewayError):
    """A disclosure made outside the stream that cannot be recorded as given: an unknown
    category or data use, a legal basis its kind does not rest on, a purpose the privacy
    policy rules out. ``field`` names what to correct."""

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class BrokerError(GatewayError):
    """The Kafka broker is unreachable or the embedded broker could not start."""
