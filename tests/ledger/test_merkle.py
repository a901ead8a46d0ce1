"""RFC 9162 Merkle tree: known vectors, hand-computed trees, and properties against a
literal transcription of the RFC's recursive definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# The leaves and roots of the Certificate Transparency reference test suite.
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# -- the RFC, transcribed literally (slow, recursive) as the reference ---------------------


def k_of(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    if not d:
        return sha(b"")
    if len(d) == 1:
        return sha(b"\x00" + d[0])
    k = k_of(len(d))
    return sha(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = k_of(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [ref_mth(d)]
    k = k_of(n)
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def hashes(leaves: list[bytes]) -> list[bytes]:
    return [leaf_hash(x) for x in leaves]


# -- known answers --------------------------------------------------------------------------


def test_empty_tree_is_hash_of_nothing() -> None:
    assert root_hash([]) == EMPTY_ROOT == sha(b"")
    assert EMPTY_ROOT.hex().startswith("e3b0c442")


def test_leaf_and_node_domain_separation() -> None:
    assert leaf_hash(b"abc") == sha(b"\x00abc")
    assert node_hash(b"L" * 32, b"R" * 32) == sha(b"\x01" + b"L" * 32 + b"R" * 32)
    assert leaf_hash(b"") == bytes.fromhex(CT_ROOTS[0])


@pytest.mark.parametrize("size", range(1, 9))
def test_ct_reference_roots(size: int) -> None:
    assert root_hash(hashes(CT_LEAVES[:size])).hex() == CT_ROOTS[size - 1]


def test_hand_computed_three_leaf_tree() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    ab = sha(b"\x01" + a + b)
    root = sha(b"\x01" + ab + c)  # 3 leaves split at k=2: (a b) c
    assert root_hash([a, b, c]) == root
    assert inclusion_proof([a, b, c], 0) == [b, c]
    assert inclusion_proof([a, b, c], 2) == [ab]
    assert consistency_proof([a, b, c], 2) == [c]
    assert consistency_proof([a, b, c], 1) == [b, c]
    assert verify_inclusion(a, 0, 3, [b, c], root)
    assert verify_inclusion(c, 2, 3, [ab], root)
    assert verify_consistency(2, 3, ab, root, [c])


def test_hand_computed_seven_leaf_paths() -> None:
    # RFC 9162 §2.1.5 example tree of 7 leaves d0..d6.
    h = hashes([bytes([i]) for i in range(7)])
    a, b, c, d = node_hash(h[0], h[1]), node_hash(h[2], h[3]), node_hash(h[4], h[5]), h[6]
    g, i = node_hash(a, b), node_hash(c, d)
    root = node_hash(g, i)
    assert root_hash(h) == root
    assert inclusion_proof(h, 0) == [h[1], b, i]  # "The audit path for d0 is [b, h, l]"
    assert inclusion_proof(h, 3) == [h[2], a, i]
    assert inclusion_proof(h, 4) == [h[5], d, g]
    assert inclusion_proof(h, 6) == [c, g]
    # Consistency 3 -> 7 is [c, d, g, l] in the RFC's naming.
    assert consistency_proof(h, 3) == [h[2], h[3], a, i]
    assert consistency_proof(h, 4) == [i]
    assert consistency_proof(h, 6) == [c, d, g]


def test_rejections() -> None:
    h = hashes([bytes([i]) for i in range(5)])
    root = root_hash(h)
    proof = inclusion_proof(h, 1)
    assert verify_inclusion(h[1], 1, 5, proof, root)
    assert not verify_inclusion(h[1], 2, 5, proof, root)  # wrong index
    assert not verify_inclusion(h[2], 1, 5, proof, root)  # wrong leaf
    assert not verify_inclusion(h[1], 1, 2, proof, root)  # wrong size (shape differs)
    assert not verify_inclusion(h[1], 5, 5, proof, root)  # index out of range
    assert not verify_inclusion(h[1], 1, 5, [*proof, proof[0]], root)  # too long
    assert not verify_inclusion(h[1], 1, 5, proof[:-1], root)  # too short
    old = root_hash(h[:3])
    cproof = consistency_proof(h, 3)
    assert verify_consistency(3, 5, old, root, cproof)
    assert not verify_consistency(3, 5, root, old, cproof)
    assert not verify_consistency(3, 5, old, root, [])
    assert not verify_consistency(5, 3, old, root, cproof)
    assert verify_consistency(5, 5, root, root, [])
    with pytest.raises(ValueError):
        inclusion_proof(h, 5)
    with pytest.raises(ValueError):
        consistency_proof(h, 0)


def test_frontier_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        Frontier(3, [b"x" * 32])
    with pytest.raises(ValueError):
        Frontier.from_bytes(3, b"x" * 32)


# -- properties ---------------------------------------------------------------------------

leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=150, deadline=None)
@given(leaf_lists)
def test_root_and_frontier_match_the_rfc_definition(leaves: list[bytes]) -> None:
    h = hashes(leaves)
    assert root_hash(h) == ref_mth(leaves)
    f = Frontier()
    for i, x in enumerate(h):
        f.append(x)
        assert f.root() == ref_mth(leaves[: i + 1])
        # The stored form is enough to continue appending later.
        f = Frontier.from_bytes(f.size, f.to_bytes())


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_inclusion_proofs_verify_and_match_the_rfc(
    leaves: list[bytes], data: st.DataObject
) -> None:
    h = hashes(leaves)
    n = len(h)
    m = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(h, m)
    assert proof == ref_path(m, leaves)
    root = root_hash(h)
    assert verify_inclusion(h[m], m, n, proof, root)
    other = data.draw(st.integers(0, n - 1))
    if h[other] != h[m]:
        assert not verify_inclusion(h[other], m, n, proof, root)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = [*proof]
        bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
        assert not verify_inclusion(h[m], m, n, bad, root)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_consistency_proofs_verify_and_match_the_rfc(
    leaves: list[bytes], data: st.DataObject
) -> None:
    h = hashes(leaves)
    n = len(h)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(h, m)
    assert proof == (ref_subproof(m, leaves, True) if m < n else [])
    old, new = root_hash(h[:m]), root_hash(h)
    assert verify_consistency(m, n, old, new, proof)
    if m < n:
        # A tree whose first m leaves were changed is not an extension of the old one.
        changed = [leaf_hash(b"tampered"), *h[1:]]
        assert not verify_consistency(m, n, old, root_hash(changed), proof)
        assert not verify_consistency(m, n, root_hash(changed[:m]), new, proof)
