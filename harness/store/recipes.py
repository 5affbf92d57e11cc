"""Recipes: typed, versioned records of how a model is made, and the one serialiser model ids come from.

A child of CycleQD, the final aggregate and every merged baseline are ``MergeRecipe``s: parents (model
ids), one generalized-merge spec over their task vectors (``harness/merging/generalized.py``) and an
optional mutation. ``to_dict`` / ``from_dict`` are the only (de)serialisers and ``recipe_id`` hashes
``to_dict``'s canonical JSON, so a model's identity (and every score-cache hit) follows from its typed
fields alone; a record that does not parse is refused with the field that is wrong.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from harness.errors import CheckpointError
from harness.merging.generalized import MergeSpec

RECIPE_VERSION = 1
BASE_ID = "base"


def expert_id(name: str) -> str:
    return f"expert:{name}"


@dataclass(frozen=True)
class MutationRecipe:
    kind: str
    seed: int
    w_max: float = 0.3
    sigma: float = 0.1


@dataclass(frozen=True)
class BaseRecipe:
    """The base model: the zero task vector."""


@dataclass(frozen=True)
class ExpertRecipe:
    """An expert checkpoint minus the base, read lazily from disk."""

    name: str


@dataclass(frozen=True)
class MergeRecipe:
    """``merge(parents' task vectors)`` then an optional mutation (``svd_expert``: the model whose SVD the
    official mutation adds along)."""

    parents: tuple[str, ...]
    merge: MergeSpec = field(default_factory=MergeSpec)
    mutation: MutationRecipe | None = None
    svd_expert: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "parents", tuple(self.parents))
        n = len(self.parents)
        if n == 0:
            raise ValueError("merge recipe: no parents")
        if self.merge.weights is not None and len(self.merge.weights) != n:
            raise ValueError(f"merge recipe: {len(self.merge.weights)} weights for {n} parents")


Recipe = Union[BaseRecipe, ExpertRecipe, MergeRecipe]
_DEFAULT_SPEC = MergeSpec()


def to_dict(r: Recipe) -> dict[str, Any]:
    """Canonical plain-JSON form (merge settings at their defaults are left out)."""
    if isinstance(r, BaseRecipe):
        return {"v": RECIPE_VERSION, "kind": "base"}
    if isinstance(r, ExpertRecipe):
        return {"v": RECIPE_VERSION, "kind": "expert", "name": r.name}
    spec = {f.name: getattr(r.merge, f.name) for f in dataclasses.fields(MergeSpec)
            if getattr(r.merge, f.name) != getattr(_DEFAULT_SPEC, f.name)}
    if "weights" in spec:
        spec["weights"] = [float(w) for w in spec["weights"]]
    return {"v": RECIPE_VERSION, "kind": "merge", "parents": list(r.parents), "merge": spec,
            "mutation": None if r.mutation is None else dataclasses.asdict(r.mutation), "svd_expert": r.svd_expert}


def from_dict(d: Mapping[str, Any], where: str = "recipe") -> Recipe:
    """Parse a serialised recipe; a CheckpointError naming ``where`` and the bad field otherwise."""
    try:
        if d.get("v") != RECIPE_VERSION:
            raise ValueError(f"format version {d.get('v')!r} is not {RECIPE_VERSION}")
        kind = d.get("kind")
        keys = set(d) - {"v", "kind"}
        if kind == "base" and not keys:
            return BaseRecipe()
        if kind == "expert" and keys == {"name"}:
            return ExpertRecipe(str(d["name"]))
        if kind == "merge" and keys == {"parents", "merge", "mutation", "svd_expert"}:
            m = dict(d["merge"])
            if "weights" in m:
                m["weights"] = tuple(m["weights"])
            mut = None if d["mutation"] is None else MutationRecipe(**d["mutation"])
            return MergeRecipe(tuple(d["parents"]), MergeSpec(**m), mut, d["svd_expert"])
        raise ValueError(f"unknown kind {kind!r} or fields {sorted(keys)}")
    except (TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{where}: not a valid recipe ({exc})") from None


def recipe_id(r: Recipe) -> str:
    """Content address: identical recipes are the same model."""
    blob = json.dumps(to_dict(r), sort_keys=True, separators=(",", ":")).encode()
    return "m-" + hashlib.sha1(blob).hexdigest()[:16]
