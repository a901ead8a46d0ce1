"""Value types shared by several events (names, addresses, payment details, devices), and
``hinted``: a free-text field whose value may
reveal a sensitive category."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import StringConstraints

from schemas.base import BoundedDate, Strict, Timestamp, cat

# --- health hints ---------------------------------------------------------------------------

REVEALS_KEY = "x-reveals"
REVEALS_WHEN_KEY = "x-reveals-when"
VISION_CORRECTION = "user.health_and_medical.vision_correction"


def hinted(category: str, default: Any = ..., *, when: str | None = None, **kwargs: Any) -> Any:
    """A free-text field labelled ``category`` whose value may reveal a vision condition
    (a lens type or strength, a prescription-only product). The gateway checks each value
    and treats one that does as ``user.health_and_medical.vision_correction``; with
    ``when``, so is every value whose sibling field ``when`` is true (an Rx item's
    description, whatever it says)."""
    extra: dict[str, Any] = {REVEALS_KEY: VISION_CORRECTION}
    if when is not None:
        extra[REVEALS_WHEN_KEY] = when
    return cat(category, default, json_schema_extra=extra, **kwargs)


# A plain pattern, not pydantic's EmailStr: full RFC validation (email-validator) costs
# ~0.2 ms per address on the hot path, and deliverability is the email agent's problem.
EmailStr = Annotated[
    str, StringConstraints(max_length=254, pattern=r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
]


class PersonName(Strict):
    first: str = cat("user.name.first", max_length=200)
    last: str = cat("user.name.last", max_length=200)


class Address(Strict):
    kind: Literal["physical", "mailing", "billing", "shipping"] = cat(
        "system.operations", "physical"
    )
    street: str = cat("user.contact.address.street", max_length=500)
    city: str = cat("user.contact.address.city", max_length=200)
    state: str | None = cat("user.contact.address.state", None, max_length=100)
    postal_code: str = cat("user.contact.address.postal_code", max_length=20)
    country: str = cat("user.contact.address.country", "US", max_length=2, min_length=2)


class BillingAddress(Strict):
    """Where the card or account holder is billed: payment data, not a delivery address."""

    kind: Literal["billing"] = cat("system.operations", "billing")
    street: str = cat("user.financial.billing_address", max_length=500)
    city: str = cat("user.financial.billing_address", max_length=200)
    state: str | None = cat("user.financial.billing_address", None, max_length=100)
    postal_code: str = cat("user.financial.billing_address", max_length=20)
    country: str = cat("user.financial.billing_address", "US", max_length=2, min_length=2)


# A processor's token names a stored card or account without being its number: it starts
# with a letter (a bare run of digits could be a card number, and is rejected as one).
_TOKEN = r"^[A-Za-z][A-Za-z0-9_:.-]{7,127}$"


class Card(Strict):
    """A card as the payment processor's tokenisation gives it to the back end: never the
    card number or the security code."""

    token: str = cat("user.financial.credit_card", pattern=_TOKEN)
    brand: Literal[
        "visa", "mastercard", "amex", "discover", "diners", "jcb", "unionpay", "maestro", "other"
    ] = cat("user.financial.credit_card")
    last4: str = cat("user.financial.credit_card", pattern=r"^[0-9]{4}$")
    expiry: str = cat("user.financial.credit_card", pattern=r"^(0[1-9]|1[0-2])/[0-9]{2}$")


class BankAccount(Strict):
    """A bank account as the payment processor's tokenisation gives it: a token, the last
    four digits and the bank's routing number, never the account number."""

    token: str = cat("user.financial.bank_account", pattern=_TOKEN)
    last4: str = cat("user.financial.bank_account", pattern=r"^[0-9A-Z]{4}$")
    routing_number: str = cat("user.financial.bank_account", pattern=r"^[0-9]{9}$")


class Payment(Strict):
    method: Literal["card", "bank_transfer", "net_terms"] = cat("user.financial.payment_preference")
    card: Card | None = cat("user.financial.credit_card", None)
    bank: BankAccount | None = cat("user.financial.bank_account", None)


class PaymentPreferences(Strict):
    method: Literal["card", "bank_transfer", "net_terms"] = cat("user.financial.payment_preference")
    terms: str | None = cat("user.financial.payment_preference", None, max_length=100)


class EyeRx(Strict):
    sphere: float = cat("user.health_and_medical.vision_prescription", ge=-30, le=30)
    cylinder: float | None = cat("user.health_and_medical.vision_prescription", None)
    axis: int | None = cat("user.health_and_medical.vision_prescription", None, ge=0, le=180)
    add: float | None = cat("user.health_and_medical.vision_prescription", None)
    prism: float | None = cat("user.health_and_medical.vision_prescription", None)


class Patient(Strict):
    name: str = cat("user.health_and_medical.patient_details", max_length=200)
    date_of_birth: BoundedDate | None = cat("user.health_and_medical.patient_details", None)


class Prescription(Strict):
    patient: Patient = cat("user.health_and_medical.patient_details")
    right_eye: EyeRx = cat("user.health_and_medical.vision_prescription")
    left_eye: EyeRx = cat("user.health_and_medical.vision_prescription")
    pupillary_distance: float | None = cat(
        "user.health_and_medical.vision_prescription", None, ge=40, le=80
    )
    prescriber: str | None = cat("user.health_and_medical.patient_details", None, max_length=200)
    conditions: str | None = cat("user.health_and_medical", None, max_length=2000)


class OrderItem(Strict):
    """One line of an order. ``rx`` marks a prescription-only product: the flag, and the
    line's SKU and description, then reveal a vision condition (health data)."""

    sku: str = hinted("system.operations", when="rx", max_length=64)
    description: str = hinted(
        "user.behavior.purchase_history.item_description", when="rx", max_length=500
    )
    quantity: int = cat("user.behavior.purchase_history", ge=1, le=100_000)
    unit_price: float = cat("user.behavior.purchase_history.order_amount", ge=0)
    weight_g: int | None = cat("system.operations", None, ge=0, le=1_000_000)
    rx: bool = cat(VISION_CORRECTION, False)


class CartItem(Strict):
    sku: str = hinted("system.operations", max_length=64)
    quantity: int = cat("user.behavior.purchase_history", ge=1, le=100_000)


class Device(Strict):
    ip: str | None = cat("user.device.ip_address", None, max_length=45)
    user_agent: str | None = cat("user.device.user_agent", None, max_length=1000)
    language: str | None = cat("user.demographic.language", None, max_length=35)
    hardware_model: str | None = cat("user.device.hardware", None, max_length=200)
    os_version: str | None = cat("user.device.hardware", None, max_length=100)
    device_id: str | None = cat("user.device.device_id", None, max_length=200)
    mobile_number: str | None = cat("user.contact.phone_number", None, max_length=40)


class GeoPoint(Strict):
    lat: float = cat("user.location.precise", ge=-90, le=90)
    lon: float = cat("user.location.precise", ge=-180, le=180)
    accuracy_m: float | None = cat("user.location.precise", None, ge=0)


class CallLog(Strict):
    calling_number: str = cat("user.contact.phone_number", max_length=40)
    forwarding_number: str | None = cat("user.contact.phone_number", None, max_length=40)
    call_type: Literal["inbound", "outbound", "sms"] = cat("user.behavior.telephony_log")
    started_at: Timestamp = cat("user.behavior.telephony_log")
    duration_s: int = cat("user.behavior.telephony_log", ge=0)
    routing: str | None = cat("user.behavior.telephony_log", None, max_length=200)
