"""The event types publishers send: an envelope (event id, type, schema version, time,
subject) around a type-specific ``data``; every field carries its data category.

Keys (the Kafka message key) are the subject's customer id, so all events of one customer
land on one partition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import BoundedDate, Strict, Timestamp, cat
from schemas.common import (
    Address,
    BillingAddress,
    CallLog,
    CartItem,
    Device,
    EmailStr,
    GeoPoint,
    OrderItem,
    Payment,
    PaymentPreferences,
    PersonName,
    Prescription,
    hinted,
)

SCHEMA_VERSION = 1


class Subject(Strict):
    customer_id: str = cat(
        "user.unique_id.customer_number", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    type: Literal["consumer", "business"] = cat("system.operations")


class Envelope(Strict):
    event_id: str = cat(
        "system.operations", min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$"
    )
    event_type: str = cat("system.operations")
    schema_version: Literal[1] = cat("system.operations")
    occurred_at: Timestamp = cat("system.operations")
    subject: Subject


# --- data payloads ---------------------------------------------------------------------


class CustomerProfile(Strict):
    name: PersonName | None = None
    title: str | None = cat("user.job_title", None, max_length=200)
    company: str | None = cat("user.contact.organization", None, max_length=300)
    addresses: list[Address] = Field(default_factory=list, max_length=20)
    phones: list[str] = cat("user.contact.phone_number", default_factory=list, max_length=20)
    fax: list[str] = cat("user.contact.fax_number", default_factory=list, max_length=10)
    emails: list[EmailStr] = cat("user.contact.email", default_factory=list, max_length=20)
    date_of_birth: BoundedDate | None = cat("user.demographic.date_of_birth", None)
    username: str | None = cat("user.account.username", None, max_length=200)
    fein: str | None = cat(
        "user.government_id.employer_identification_number", None, pattern=r"^[0-9]{2}-?[0-9]{7}$"
    )
    resale_numbers: list[str] = cat(
        "user.government_id.resale_number", default_factory=list, max_length=20
    )
    trade_references: list[str] = cat(
        "user.financial.trade_reference", default_factory=list, max_length=20
    )
    payment_preferences: PaymentPreferences | None = None


class CustomerRegistered(CustomerProfile):
    pass


class CustomerUpdated(CustomerProfile):
    pass


class CustomerTypeChanged(Strict):
    """The one event that changes a subject's type once it is known (registration sets it);
    the envelope's ``subject.type`` of this event is not checked against the state, ``type``
    here is the type from ``occurred_at`` on."""

    type: Literal["consumer", "business"] = cat("system.operations")
    # Free text may say something about the person: classified as private content.
    reason: str | None = cat("user.content.private", None, max_length=200)


class SensitiveGrant(Strict):
    scope: Literal["agent", "purpose"] = cat("user.privacy_preferences")
    target: str = cat("user.privacy_preferences", max_length=200)
    granted: bool = cat("user.privacy_preferences")


class ConsentChanged(Strict):
    marketing: Literal["opt_in", "opt_out"] | None = cat("user.privacy_preferences", None)
    objection: bool | None = cat("user.privacy_preferences", None)
    reseller_sharing: bool | None = cat("user.privacy_preferences", None)
    gpc: bool | None = cat("user.privacy_preferences", None)
    sensitive: list[SensitiveGrant] = cat(
        "user.privacy_preferences", default_factory=list, max_length=50
    )
    source: Literal["web", "unsubscribe_link", "support", "account", "browser"] = cat(
        "system.operations", "web"
    )


class OrderPlaced(Strict):
    order_id: str = cat("user.unique_id.order_number", max_length=64)
    items: list[OrderItem] = Field(min_length=1, max_length=500)
    currency: str = cat("system.operations", "USD", pattern=r"^[A-Z]{3}$")
    total: float = cat("user.behavior.purchase_history.order_amount", ge=0)
    recipient: PersonName
    shipping_address: Address
    billing_address: BillingAddress | None = None
    contact_email: EmailStr | None = cat("user.contact.email", None)
    contact_phone: str | None = cat("user.contact.phone_number", None, max_length=40)
    payment: Payment
    prescription: Prescription | None = None
    notes: str | None = hinted("user.content.private", None, max_length=5000)


class OrderShipped(Strict):
    order_id: str = cat("user.unique_id.order_number", max_length=64)
    carrier: str = cat("system.operations", max_length=100)
    tracking_number: str = cat("user.behavior.purchase_history", max_length=100)
    shipped_at: Timestamp = cat("system.operations")
    shipping_address: Address
    recipient: PersonName
    contact_email: EmailStr | None = cat("user.contact.email", None)
    items: list[OrderItem] = Field(default_factory=list, max_length=500)


class PaymentRequested(Strict):
    order_id: str = cat("user.unique_id.order_number", max_length=64)
    amount: float = cat("user.behavior.purchase_history.order_amount", ge=0)
    currency: str = cat("system.operations", "USD", pattern=r"^[A-Z]{3}$")
    payer: PersonName
    billing_address: BillingAddress
    payment: Payment


class PaymentSettled(Strict):
    order_id: str = cat("user.unique_id.order_number", max_length=64)
    amount: float = cat("user.behavior.purchase_history.order_amount", ge=0)
    currency: str = cat("system.operations", "USD", pattern=r"^[A-Z]{3}$")
    status: Literal["settled", "declined", "refunded"] = cat("system.operations")
    payment_reference: str = cat("system.operations", max_length=100)
    card_last4: str | None = cat("user.financial.credit_card", None, pattern=r"^[0-9]{4}$")


class SupportTicket(Strict):
    ticket_id: str = cat("system.operations", max_length=64)
    channel: Literal["email", "chat", "phone", "form"] = cat("system.operations")
    subject_line: str = hinted("user.content.private", max_length=500)
    message: str = hinted("user.content.private", max_length=20_000)
    contact_email: EmailStr | None = cat("user.contact.email", None)
    contact_phone: str | None = cat("user.contact.phone_number", None, max_length=40)
    call: CallLog | None = None


class SiteVisit(Strict):
    session_id: str = cat("user.device.cookie_id", max_length=200)
    # Page paths name the catalogue pages visited (an interest, not a condition): not
    # checked for health hints, unlike what the visitor types, buys or writes.
    pages: list[str] = cat("user.behavior.browsing_history", default_factory=list, max_length=500)
    # The referrer may carry what the visitor searched for elsewhere: checked like a search.
    referrer: str | None = hinted("user.behavior.browsing_history", None, max_length=2000)
    exit_page: str | None = cat("user.behavior.browsing_history", None, max_length=2000)
    duration_s: int | None = cat("user.behavior.browsing_history", None, ge=0)
    visit_number: int | None = cat("user.behavior.browsing_history", None, ge=1)
    search_queries: list[str] = hinted(
        "user.behavior.search_history", default_factory=list, max_length=200
    )
    cart: list[CartItem] = Field(default_factory=list, max_length=500)
    device: Device | None = None
    location: GeoPoint | None = None
    gpc: bool = cat("user.privacy_preferences", False)


class ErasureRequested(Strict):
    request_id: str = cat("system.operations", max_length=64)
    channel: Literal["web", "email", "support", "mail"] = cat("system.operations", "web")


DATA_MODELS: dict[str, type[Strict]] = {
    "customer.registered": CustomerRegistered,
    "customer.updated": CustomerUpdated,
    "customer.type_changed": CustomerTypeChanged,
    "consent.changed": ConsentChanged,
    "order.placed": OrderPlaced,
    "order.shipped": OrderShipped,
    "payment.requested": PaymentRequested,
    "payment.settled": PaymentSettled,
    "support.ticket": SupportTicket,
    "site.visit": SiteVisit,
    "erasure.requested": ErasureRequested,
}
