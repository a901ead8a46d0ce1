"""Health hints: the detector, the hint steps the engine compiles for free-text fields, and
what ``policy explain`` says about them."""

from __future__ import annotations

import copy

import pytest
from pydantic import BaseModel

from gateway.engine import HINT, REMOVE, SEND, Step
from gateway.hints import reveals_vision_condition
from gateway.policy import Policy
from gateway.policy_tools import explain, offline_engine
from schemas.base import Strict, cat
from schemas.common import VISION_CORRECTION, hinted
from schemas.registry import BadHint, _walk, field_tree
from tests.conftest import Run


@pytest.mark.parametrize(
    "text",
    [
        "Progressive lenses 1.67",
        "PROGRESSIVES",
        "bi-focal readers",
        "Single-vision blanks 1.50, box of 50",
        "single vision",
        "varifocal",
        "toric contact lenses",
        "for my astigmatism",
        "myopic, -4.75",
        "sph -2.25 cyl -0.75",
        "+1.50 readers",
        "reading glasses",
        "high-index 1.74",
        "Rx lenses",
        "https://search.example/?q=progressive+lenses",
        "my prescription",
    ],
)
def test_the_detector_finds_what_reveals_a_vision_condition(text: str) -> None:
    assert reveals_vision_condition(text)
    assert reveals_vision_condition(["frames", text])


@pytest.mark.parametrize(
    "text",
    [
        "Titanium frame 52-18",
        "Hard case with microfiber cloth",
        "SKU-20167",
        "Order SO-50001, 2 items",
        "Where is my order?",
        "Total 149.00",
        "Subscription renewal",
    ],
)
def test_the_detector_leaves_plain_product_text_alone(text: str) -> None:
    assert not reveals_vision_condition(text)
    assert not reveals_vision_condition([text, None])


def test_hinted_fields_in_the_schemas() -> None:
    def hinted_paths(event_type: str) -> dict[str, tuple[str | None, str | None]]:
        return {
            leaf.path: (leaf.reveals, leaf.reveals_when)
            for node in field_tree(event_type)
            for leaf in node.leaves()
            if leaf.reveals
        }

    assert hinted_paths("order.placed") == {
        "data.items[].sku": (VISION_CORRECTION, "rx"),
        "data.items[].description": (VISION_CORRECTION, "rx"),
        "data.notes": (VISION_CORRECTION, None),
    }
    assert set(hinted_paths("site.visit")) == {
        "data.referrer",
        "data.search_queries[]",
        "data.cart[].sku",
    }
    assert set(hinted_paths("support.ticket")) == {"data.subject_line", "data.message"}


def test_a_hint_flag_must_be_a_sibling_field() -> None:
    class Bad(Strict):
        text: str = hinted("user.content.private", when="flag")

    class Holder(BaseModel):
        inner: Bad = cat("user.content.private")

    with pytest.raises(BadHint, match="'flag'"):
        _walk(Holder, "", None)


def _steps(steps: tuple[Step, ...]) -> dict[str, Step]:
    """Every compiled step by path (a hint step's own children left out)."""
    out: dict[str, Step] = {}
    for s in steps:
        out[s.path] = s
        if s.kind != HINT:
            out.update(_steps(s.children))
    return out


def test_a_free_text_field_compiles_to_a_hint_step(policy: Policy) -> None:
    engine = offline_engine(policy)
    steps = _steps(engine.full_plan("analytics", "site.visit").steps)
    queries = steps["data.referrer"]
    assert queries.kind == HINT
    plain, alt = queries.children
    assert (plain.kind, alt.kind) == (SEND, REMOVE)
    assert alt.categories == frozenset([VISION_CORRECTION])
    # A field removed either way is just removed: shipping never gets descriptions.
    items = _steps(engine.full_plan("shipping", "order.placed").steps)
    assert items["data.items[].description"].kind == REMOVE
    assert items["data.items[].sku"].kind == HINT


def test_a_referrer_naming_a_lens_is_removed_before_it_reaches_the_aggregates(
    run: Run, sample: dict
) -> None:
    visit = copy.deepcopy(sample["site.visit"])
    visit["data"]["search_queries"] = ["titanium frame", "progressive lenses"]
    visit["data"]["referrer"] = "https://www.example-search.com/?q=progressive+lenses"
    out = run.send(visit)
    assert run.received(out, "analytics") is None  # aggregates only: nothing per event
    rec = run.record(out, "analytics")
    assert rec.outcome == "contributed"
    assert "data.referrer" in rec.paths_removed
    assert VISION_CORRECTION in rec.categories_removed
    (c,) = out.contributions
    assert c.rows["referrers"] == [(("(none)",), {})]
    visit["data"]["referrer"] = "https://www.example-search.com/?q=titanium+frames"
    visit["event_id"] = "evt-visit-plain-0001"
    (c,) = run.send(visit).contributions
    assert c.rows["referrers"] == [(("example-search.com",), {})]


def test_explain_shows_the_health_hint_rule(policy: Policy) -> None:
    engine = offline_engine(policy)
    rows = {r.path: r for r in explain(engine, "email", "order.placed")}
    desc = rows["data.items[].description"]
    assert (desc.outcome, desc.category) == (
        "sent",
        "user.behavior.purchase_history.item_description",
    )
    assert "progressive" in desc.hint and "rx flag is set" in desc.hint
    assert f"it is {VISION_CORRECTION}: removed" in desc.hint
    assert "opt-in" in desc.hint
    opted = {r.path: r for r in explain(engine, "email", "order.placed", sensitive_opt_in=True)}
    assert f"it is {VISION_CORRECTION}: sent" in opted["data.items[].description"].hint
    assert rows["data.items[].quantity"].hint == ""


def test_the_detector_remembers_short_strings_only_and_a_bounded_number() -> None:
    from gateway import hints

    seen = hints._names_vision.seen
    seen.clear()
    long_text = "notes " * 100 + "progressive lenses"
    assert reveals_vision_condition(long_text) is True
    assert long_text not in seen  # free text is searched each time
    assert reveals_vision_condition("Titanium frame 52-18") is False
    assert reveals_vision_condition("Titanium frame 52-18") is False
    assert seen == {"Titanium frame 52-18": False}
    for i in range(12_000):
        reveals_vision_condition(f"frame {i}")
    assert len(seen) <= 10_000
    assert reveals_vision_condition("Varilux progressive -2.25") is True
