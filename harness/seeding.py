"""Derived seeds: one run seed fans out into independent, order-free streams.

A tensor's random draws depend only on (seed, tensor name), never on the order in which tensors are
visited, so a streamed merge, an in-memory merge and a rebuild from a recipe give the same bits.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from a base seed and any labels (stable across processes and Python versions)."""
    h = hashlib.blake2b(repr((int(seed),) + tuple(str(p) for p in parts)).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def tensor_generator(seed: int, *parts: object) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *parts))
    return g
