"""One test per promise of the privacy policy that the gateway keeps, each written from the
policy's own sentence (quoted in its docstring), through the full core: decide, seal, open.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import orjson
import pytest

from gateway.consent import ConsentState
from gateway.dev.samples import scenario
from gateway.ledger.reports import summarize_shine_the_light
from gateway.policy import parse_policy
from gateway.policy_tools import check_policy
from tests.conftest import Run, event, walk_values

ROOT = Path(__file__).resolve().parent.parent
GOOD = (ROOT / "agents.yaml").read_text()

# What a lens line says about its wearer: none of it may reach an agent without opt-in.
LENS_WORDS = ("progressive", "bifocal", "-2.25", "+1.50", "myopia")


def consent(data: dict, customer: str, stype: str = "consumer") -> dict:
    return event(
        "consent.changed", {"source": "account", **data}, customer=customer, n=900, stype=stype
    )


def order(customer: str, *, n: int = 1, **extra: object) -> dict:
    """An order of prescription lenses, a non-Rx pair of readers and a frame."""
    data = {
        "order_id": f"SO-{n:05d}",
        "items": [
            {
                "sku": "SKU-20167",
                "description": "Progressive lenses 1.67, -2.25 myopia",
                "quantity": 1,
                "unit_price": 289.0,
                "rx": True,
            },
            {
                # A prescription-only product whose description names nothing medical.
                "sku": "SKU-20890",
                "description": "Lens pair, model 7",
                "quantity": 1,
                "unit_price": 99.0,
                "rx": True,
            },
            {
                "sku": "SKU-40150",
                "description": "Bifocal readers +1.50",
                "quantity": 1,
                "unit_price": 39.0,
            },
            {
                "sku": "SKU-31052",
                "description": "Titanium frame 52-18",
                "quantity": 2,
                "unit_price": 149.0,
            },
        ],
        "total": 626.0,
        "recipient": {"first": "Ada", "last": "Lovelace"},
        "shipping_address": {
            "street": "1 Analytical Row",
            "city": "Springfield",
            "state": "IL",
            "postal_code": "62704",
        },
        "contact_email": "ada@example.com",
        # Net terms: no payment details, so the event is valid under any card schema.
        "payment": {"method": "net_terms"},
        **extra,
    }
    return event("order.placed", data, customer=customer, n=n)


def lens_words_in(payload: dict) -> set[str]:
    text = " ".join(str(v) for v in walk_values(payload)).lower()
    return {w for w in LENS_WORDS if w in text}


# --- Objection -------------------------------------------------------------------------------


def test_an_objection_stops_analytics_and_marketing_but_not_the_order(
    run: Run, sample: dict
) -> None:
    """The policy uses what it collects for "Understanding better how the Site is being used
    so we can improve it" -- on legitimate interests, which a customer may object to (the
    right to object). An objection stops every purpose on legitimate interests as well as
    marketing, the withheld record cites it, and what fulfils the order (contract) flows."""
    cid = "C-objects"
    run.send(consent({"objection": True}, cid))
    visit = copy.deepcopy(sample["site.visit"])
    visit["subject"]["customer_id"] = cid
    out = run.send(visit)
    assert run.received(out, "analytics") is None
    rec = run.record(out, "analytics")
    assert (rec.outcome, rec.reason) == ("withheld", "objection")

    out = run.send(order(cid))
    assert run.record(out, "analytics").reason == "objection"
    for agent in ("shipping", "payments", "email"):
        rec = run.record(out, agent)
        assert rec.outcome == "disclosed", agent
        assert rec.legal_bases == ["contract"], agent
    profile = event("customer.updated", {"emails": ["x@example.com"]}, customer=cid, n=2)
    assert run.record(run.send(profile), "email").reason == "objection"


# --- Health hints ----------------------------------------------------------------------------


def test_a_lens_description_never_reaches_shipping_without_opt_in(run: Run) -> None:
    """ "Any Sensitive Personal Information that you input on the Site related to an order,
    such as details regarding medical or health conditions of one or more individuals that
    are the subject of an order" -- and "without your affirmative or explicit (opt-in)
    permission, such information will not be disclosed to a third party". A lens type or
    strength in an item line, and a prescription-only item, reveal a vision condition."""
    out = run.send(order("C-lens", notes="Please pack the -2.25 progressive lenses well"))
    shipped = run.received(out, "shipping")
    assert shipped is not None
    assert lens_words_in(shipped) == set()
    items = shipped["data"]["items"]
    # The carrier gets what moving the parcel needs: quantities, and SKUs except those of
    # prescription-only products.
    assert [i.get("sku") for i in items] == [None, None, "SKU-40150", "SKU-31052"]
    assert [i["quantity"] for i in items] == [1, 1, 1, 2]
    assert all("description" not in i and "rx" not in i for i in items)
    rec = run.record(out, "shipping")
    assert "user.health_and_medical.vision_correction" in rec.categories_removed
    assert not any(c.startswith("user.health_and_medical") for c in rec.categories_sent)
    for agent in ("payments", "email"):
        payload = run.received(out, agent)
        assert payload is not None and lens_words_in(payload) == set(), agent
    # Analytics: aggregates only; the lens lines count in no product category.
    (c,) = out.contributions
    assert lens_words_in(c.rows) == set()
    assert [dims for dims, _ in c.rows["product_categories"]] == [("frames",)]
    mail = run.received(out, "email")
    assert mail is not None
    # The email agent still confirms what reveals nothing: the frame line.
    assert [i.get("description") for i in mail["data"]["items"]] == [
        None,
        None,
        None,
        "Titanium frame 52-18",
    ]


def test_lens_lines_reach_the_email_agent_with_explicit_opt_in_only(run: Run) -> None:
    """ "Without your affirmative or explicit (opt-in) permission, such information will not be
    disclosed to a third party": with it, the order confirmation lists the lens lines, and
    the record cites the opt-in. The carrier gets no health data even then."""
    cid = "C-optin"
    grant = {"scope": "agent", "target": "email", "granted": True}
    run.send(consent({"sensitive": [grant]}, cid))
    run.send(consent({"sensitive": [{**grant, "target": "shipping"}]}, cid))
    out = run.send(order(cid))
    mail = run.received(out, "email")
    assert mail is not None
    assert mail["data"]["items"][0]["description"].startswith("Progressive")
    assert mail["data"]["items"][1]["rx"] is True
    rec = run.record(out, "email")
    assert "user.health_and_medical.vision_correction" in rec.categories_sent
    assert "sensitive_opt_in:agent:email" in rec.consent
    shipped = run.received(out, "shipping")
    assert shipped is not None and lens_words_in(shipped) == set()


# --- Card numbers ----------------------------------------------------------------------------

CARD_PLACES = [
    ("notes", lambda d: d.update(notes="card 4111 1111 1111 1111 exp 09/28")),
    ("recipient name", lambda d: d["recipient"].update(first="5555-5555-5555-4444")),
    ("item description", lambda d: d["items"][3].update(description="frame, paid 378282246310005")),
    ("a JSON number", lambda d: d["items"][0].update(quantity=4111111111111111)),
    ("a nested unknown field", lambda d: d.update(extra={"a": [{"b": "6011-0009-9013-9424"}]})),
]


@pytest.mark.parametrize(("place", "put"), CARD_PLACES, ids=[p for p, _ in CARD_PLACES])
def test_card_numbers_anywhere_are_dead_lettered(run: Run, place: str, put: object) -> None:
    """ "Your Company's payment preferences, bank accounts and credit/debit card details" are
    collected; "We provide appropriate administrative and security measures to protect
    against unauthorized access, disclosure". A card number never goes on the stream: the
    event carries the processor's token, and a value that looks like a card number, in any
    field, is dead-lettered (reason card_number) and reaches no agent."""
    ev = order("C-card")
    put(ev["data"])  # type: ignore[operator]
    before = dict(run.states)
    out = run.send(ev)
    assert out.dead_letter is not None
    assert out.dead_letter.reason == "card_number"
    assert out.messages == [] and out.records == []
    assert run.states == before
    letter = out.dead_letter.to_json().decode()
    for digits in ("4111", "5555", "3782", "6011"):
        assert digits not in letter


def test_the_schema_accepts_a_processor_token_and_no_card_number(run: Run, sample: dict) -> None:
    """ "Details regarding Your Company's payment preferences, bank accounts, and credit/debit
    card details": what the payment processor needs is its own token, the brand, the last
    four digits and the expiry; a card number or security code has no field."""
    request = copy.deepcopy(sample["payment.requested"])
    card = request["data"]["payment"]["card"]
    assert set(card) == {"token", "brand", "last4", "expiry"}
    got = run.received(run.send(request), "payments")
    assert got is not None and got["data"]["payment"]["card"]["last4"] == card["last4"]
    for field, value in (("number", "4000056655665556"), ("cvv", "123")):
        bad = copy.deepcopy(request)
        bad["data"]["payment"]["card"][field] = value
        out = run.send(bad)
        assert out.dead_letter is not None and out.messages == []


# --- Legal bases -----------------------------------------------------------------------------


def test_marketing_to_a_customer_who_never_opted_in_rests_on_legitimate_interests(
    run: Run,
) -> None:
    """ "You may opt-out of any of our Marketing Communications. To do so, follow the
    unsubscribe link": marketing is opt-out, so a customer who never chose receives it on
    legitimate interests (the soft opt-in), and the record says so and which consent state
    it consulted; once the customer opts in, the basis is their consent."""
    cid = "C-never-chose"
    profile = event("customer.registered", {"emails": ["n@example.com"]}, customer=cid)
    rec = run.record(run.send(profile), "email")
    assert rec.outcome == "disclosed"
    assert rec.purposes == ["marketing.communications.email"]
    assert rec.legal_bases == ["legitimate_interests"]
    assert rec.consent == ["marketing:unknown"]

    run.send(consent({"marketing": "opt_in"}, cid))
    rec = run.record(run.send(profile), "email")
    assert rec.legal_bases == ["consent"]
    assert rec.consent == ["marketing:opt_in@2026-05-04T10:00:00Z"]

    run.send(consent({"marketing": "opt_out"}, cid))
    rec = run.record(run.send(profile), "email")
    assert (rec.outcome, rec.reason) == ("withheld", "marketing_opt_out")


# --- Resellers -------------------------------------------------------------------------------


def _own_marketing_reseller(text: str) -> str:
    """The reseller as a third party receiving data for its own marketing."""
    text = re.sub(
        r"role: \w+\n(\s+)contract: RSA-", r"role: third_party\n\1contract: RSA-", text, count=1
    )
    return text.replace("marketing.communications.sales_partner:", "third_party_sharing.marketing:")


def test_a_policy_giving_a_third_party_data_for_its_own_marketing_is_refused() -> None:
    """ "We have and follow a policy of not disclosing customers' personal information to
    third parties for direct marketing purposes", and the companies working for us "are not
    permitted to use your Personal Information for their own purposes": `policy check`
    refuses a policy that would give any recipient data for its own marketing."""
    bad = parse_policy(_own_marketing_reseller(GOOD))
    assert bad.agents["reseller"].recipient.role == "third_party"
    errors = [f for f in check_policy(bad) if f.level == "error"]
    assert errors and all(f.agent == "reseller" for f in errors)
    assert any("third parties for direct marketing purposes" in f.message for f in errors)
    # A third party with any marketing purpose is its own marketing too.
    third = parse_policy(
        re.sub(
            r"role: \w+\n(\s+)contract: RSA-", r"role: third_party\n\1contract: RSA-", GOOD, count=1
        )
    )
    assert any(f.level == "error" and f.agent == "reseller" for f in check_policy(third))
    assert [f for f in check_policy(parse_policy(GOOD)) if f.level == "error"] == []


def test_the_shine_the_light_report_shows_no_third_party_got_data_for_its_own_marketing(
    core: object,
) -> None:
    """ "For California Residents. We have and follow a policy of not disclosing customers'
    personal information to third parties for direct marketing purposes." Over the bundled
    sample (a business customer reaching the reseller included), the yearly report lists no
    third party and says so."""
    from gateway.runtime import Core

    assert isinstance(core, Core)
    states: dict[str, ConsentState] = {}
    records = [
        r
        for e in scenario()
        for r in core.pipeline.process(orjson.dumps(e), states, verify=False).records
    ]
    assert any(r.agent == "reseller" and r.outcome == "disclosed" for r in records)
    years = {r.recorded_at.year for r in records}
    for year in years:
        rep = summarize_shine_the_light(records, year)
        assert rep.third_parties == []
        assert rep.statement.startswith(f"In {year} no customer's personal information")
