"""Merkle trees as in RFC 9162 §2.1 (Certificate Transparency v2), SHA-256.

Functions here work on *leaf hashes* (``leaf_hash(data)``), not on raw leaves, because the
store keeps leaf hashes after a record body is pruned. Proof generation takes the list of
a shard's leaf hashes; verification needs only the proof, sizes and roots, so an outsider
can run it. ``Frontier`` is the compact range of a growing tree: the roots of its perfect
subtrees, left to right, which is all an append-only writer needs to know the current root
without re-reading the leaves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where MTH splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the given leaf hashes."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    # Fold the perfect subtrees left to right: same result as the recursive definition,
    # without recursion depth or slicing copies.
    frontier = Frontier()
    for h in leaves:
        frontier.append(h)
    return frontier.root()


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) for leaf ``index`` of the tree of ``leaves`` (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} outside tree of size {len(leaves)}")
    proof: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    # Walk down from the root, collecting the sibling subtree at each level; the RFC lists
    # them bottom-up, so reverse at the end.
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            proof.append(root_hash(leaves[lo + k : hi]))
            hi = lo + k
        else:
            proof.append(root_hash(leaves[lo : lo + k]))
            lo, m = lo + k, m - k
    proof.reverse()
    return proof


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(m, D[n]) between the tree of the first ``old_size`` leaves and all of them."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError(f"old size {old_size} not in 1..{n}")
    return _subproof(leaves, 0, n, old_size, True)


def _subproof(leaves: Sequence[bytes], lo: int, hi: int, m: int, whole: bool) -> list[bytes]:
    n = hi - lo
    if m == n:
        return [] if whole else [root_hash(leaves[lo:hi])]
    k = _split(n)
    if m <= k:
        return [*_subproof(leaves, lo, lo + k, m, whole), root_hash(leaves[lo + k : hi])]
    return [*_subproof(leaves, lo + k, hi, m - k, False), root_hash(leaves[lo : lo + k])]


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``leaf`` (a leaf hash) sit at ``index`` under ``root``?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` an append-only extension of ``old_root``?"""
    if old_size == new_size:
        return not proof and old_root == new_root
    if not 0 < old_size < new_size:
        return False
    if not proof:
        return False
    path = list(proof)
    # A power-of-two old tree is itself a node of the new one: the RFC then starts from
    # the old root instead of a proof element.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


class Frontier:
    """The compact range [0, size) of an append-only tree: O(log n) state, O(1) appends
    (amortised), and the root at any size without touching earlier leaves."""

    __slots__ = ("_nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} nodes")
        self.size = size
        # Roots of perfect subtrees, largest (leftmost) first, one per set bit of size.
        self._nodes = list(nodes)

    def append(self, leaf: bytes) -> None:
        node, size = leaf, self.size
        # Every trailing 1-bit of the old size is a full subtree that the new leaf completes.
        while size & 1:
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
        self._nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._nodes:
            return EMPTY_ROOT
        r = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            r = node_hash(node, r)
        return r

    def to_bytes(self) -> bytes:
        return b"".join(self._nodes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) != HASH_SIZE * size.bit_count():
            raise ValueError("frontier bytes do not match the tree size")
        nodes = [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]
        return cls(size, nodes)
