"""The vocabulary: Fides default taxonomy plus the declared extensions in
``schemas/taxonomy.yaml``, with the gateway's classification (sensitive, direct identifier,
marketing). Keys are dotted paths; a key covers all keys below it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml
from fideslang.default_taxonomy import DEFAULT_TAXONOMY

from gateway.errors import TaxonomyError


def covers(parent: str, key: str) -> bool:
    """True if ``key`` is ``parent`` or one of its descendants."""
    return key == parent or key.startswith(parent + ".")


@dataclass(frozen=True)
class Term:
    key: str
    parent: str | None
    name: str
    description: str = ""


@dataclass
class Taxonomy:
    categories: dict[str, Term]
    uses: dict[str, Term]
    subjects: dict[str, Term]
    sensitive: tuple[str, ...] = ()
    direct_identifiers: tuple[str, ...] = ()
    marketing_uses: tuple[str, ...] = ()
    own_marketing_uses: tuple[str, ...] = ()
    partner_marketing_uses: tuple[str, ...] = ()
    subject_types: dict[str, str] = field(default_factory=dict)
    _sensitive_cache: dict[str, bool] = field(default_factory=dict, repr=False)
    _marketing_cache: dict[str, bool] = field(default_factory=dict, repr=False)

    def is_category(self, key: str) -> bool:
        return key in self.categories

    def is_use(self, key: str) -> bool:
        return key in self.uses

    def is_sensitive(self, category: str) -> bool:
        # Asked per decision on the hot path: memoised (the key space is the taxonomy's).
        hit = self._sensitive_cache.get(category)
        if hit is None:
            hit = self._sensitive_cache[category] = any(covers(s, category) for s in self.sensitive)
        return hit

    def is_direct_identifier(self, category: str) -> bool:
        return any(covers(d, category) for d in self.direct_identifiers) and not covers(
            "user.unique_id.pseudonymous", category
        )

    def is_marketing(self, use: str) -> bool:
        hit = self._marketing_cache.get(use)
        if hit is None:
            hit = self._marketing_cache[use] = any(covers(m, use) for m in self.marketing_uses)
        return hit

    def is_own_marketing(self, use: str) -> bool:
        """The recipient would use the data for its own (direct) marketing."""
        return any(covers(m, use) for m in self.own_marketing_uses)

    def is_partner_marketing(self, use: str) -> bool:
        """Our marketing delivered by a reseller or sales partner (business customers only)."""
        return any(covers(m, use) for m in self.partner_marketing_uses)


def _default_terms(items: list) -> dict[str, Term]:
    return {
        i.fides_key: Term(
            i.fides_key, getattr(i, "parent_key", None), i.name or i.fides_key, i.description or ""
        )
        for i in items
    }


def _extend(kind: str, base: dict[str, Term], decls: list[dict], src: str) -> None:
    for d in decls or []:
        key, parent = d.get("key"), d.get("parent")
        if not key or not parent:
            raise TaxonomyError(f"{src}: every {kind} extension needs 'key' and 'parent': {d!r}")
        if key in base:
            raise TaxonomyError(f"{src}: {kind} {key!r} is declared twice (or already in Fides)")
        if parent not in base:
            raise TaxonomyError(f"{src}: {kind} {key!r} has unknown parent {parent!r}")
        if not key.startswith(parent + "."):
            raise TaxonomyError(f"{src}: {kind} {key!r} must be named under its parent {parent!r}")
        base[key] = Term(key, parent, d.get("name", key), d.get("description", ""))


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    if path is None:
        text = resources.files("schemas").joinpath("taxonomy.yaml").read_text()
        src = "schemas/taxonomy.yaml"
    else:
        text, src = path.read_text(), str(path)
    ext = yaml.safe_load(text) or {}
    cats = _default_terms(DEFAULT_TAXONOMY.data_category)
    uses = _default_terms(DEFAULT_TAXONOMY.data_use)
    subjects = _default_terms(DEFAULT_TAXONOMY.data_subject)
    _extend("data category", cats, ext.get("data_categories") or [], src)
    _extend("data use", uses, ext.get("data_uses") or [], src)
    tax = Taxonomy(
        categories=cats,
        uses=uses,
        subjects=subjects,
        sensitive=tuple(ext.get("sensitive_categories") or ()),
        direct_identifiers=tuple(ext.get("direct_identifiers") or ()),
        marketing_uses=tuple(ext.get("marketing_uses") or ()),
        own_marketing_uses=tuple(ext.get("own_marketing_uses") or ()),
        partner_marketing_uses=tuple(ext.get("partner_marketing_uses") or ()),
        subject_types=dict(ext.get("subject_types") or {}),
    )
    for label, keys, known in (
        ("sensitive_categories", tax.sensitive, cats),
        ("direct_identifiers", tax.direct_identifiers, cats),
        ("marketing_uses", tax.marketing_uses, uses),
        ("own_marketing_uses", tax.own_marketing_uses, uses),
        ("partner_marketing_uses", tax.partner_marketing_uses, uses),
    ):
        for k in keys:
            if k not in known:
                raise TaxonomyError(f"{src}: {label} names unknown key {k!r}")
    for st, subj in tax.subject_types.items():
        if subj not in subjects:
            raise TaxonomyError(f"{src}: subject type {st!r} maps to unknown data subject {subj!r}")
    return tax


@cache
def default_taxonomy() -> Taxonomy:
    return load_taxonomy()
