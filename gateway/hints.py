"""Health hints: free text that reveals a vision condition.

An item line saying "Progressive lenses" or "-2.25 single vision" tells anyone who reads
it that a person is presbyopic or short-sighted: health data, even though the field is a
product description. Schemas mark such free-text fields (``schemas.common.hinted``); the
engine checks each value with the detector of the category it may reveal, and a value that
hits is treated as that category (sensitive: it needs the subject's explicit opt-in).

The detector errs towards a hit: a false hit withholds a product description, a miss
discloses health data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.memo import short_string_memo
from schemas.common import VISION_CORRECTION

# Words that name a vision condition or what corrects it. Whole words, any case; a trailing
# \w* takes plurals and derived forms (myopia, myopic; progressives).
_TERMS = (
    r"progressive\w*",
    r"varifocal\w*",
    r"multi-?focal\w*",
    r"bi-?focal\w*",
    r"tri-?focal\w*",
    r"single[\s_+-]?vision",
    r"reading[\s_+-]glasses",
    r"contact[\s_+-]lens\w*",
    r"toric",
    r"astigmat\w*",
    r"myop\w*",
    r"hyperop\w*",
    r"presbyop\w*",
    r"near-?sighted\w*",
    r"far-?sighted\w*",
    r"short-?sighted\w*",
    r"long-?sighted\w*",
    r"amblyop\w*",
    r"keratoconus",
    r"cataract\w*",
    r"glaucoma",
    r"macular",
    r"low[\s_+-]vision",
    r"prescription\w*",
    r"rx",
    r"diopt\w*",
    r"sph",
    r"cyl",
    r"prism\w*",
    r"high[\s_+-]?index",
)
# A lens strength: a signed power in quarter dioptres (-2.25, +1.50, "- 0.75"), not part of
# a longer number or a word ("52-18" is a frame size, not a strength).
_STRENGTH = r"(?<![\w.])[+\-\u2212]\s?\d{1,2}[.,](?:00|25|50|75)(?![\d])"
_VISION = re.compile(
    r"(?<![A-Za-z0-9])(?:" + "|".join(_TERMS) + r")(?![A-Za-z0-9])|" + _STRENGTH, re.IGNORECASE
)

VISION_RULE = (
    "the value names a lens type or strength (progressive, bifocal, single vision, "
    "-2.25 ...), a vision condition (myopia, astigmatism ...) or a prescription (Rx)"
)


# A catalogue's descriptions and options recur event after event, and the pattern's search
# is the costliest step of a plan: its verdicts on short strings are remembered.
@short_string_memo(length=200, count=10_000)
def _names_vision(text: str) -> bool:
    return _VISION.search(text) is not None


def reveals_vision_condition(value: Any) -> bool:
    """True if ``value`` (a string, or a list of them: any element) names a vision
    condition, a lens type or strength, or a prescription."""
    if isinstance(value, str):
        return _names_vision(value)
    if isinstance(value, list | tuple):
        return any(reveals_vision_condition(v) for v in value)
    return value is not None and _VISION.search(str(value)) is not None


Detector = Callable[[Any], bool]

DETECTORS: dict[str, tuple[Detector, str]] = {
    VISION_CORRECTION: (reveals_vision_condition, VISION_RULE),
}
"""Category a value may reveal -> (its detector, what the detector looks for)."""


def detector_for(category: str) -> tuple[Detector, str]:
    """The detector of ``category`` and its rule in words (KeyError: none declared)."""
    return DETECTORS[category]
