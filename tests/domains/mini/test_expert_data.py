"""expert_data: an expert trains on a seeded share of its family's gold trajectories."""

import json

import pytest

from domains.mini import families as F
from domains.mini import world as W
from domains.mini.expert_data import subset
from harness.errors import ConfigError


def _convs(n):
    return [[{"role": "user", "content": str(i)}] for i in range(n)]


def test_subset_is_a_seeded_share_in_recorded_order():
    convs = _convs(1000)
    part = subset("os", convs, 0.05, 0)
    assert len(part) == 50
    idx = [int(c[0]["content"]) for c in part]
    assert idx == sorted(idx)  # recorded order kept
    assert part == subset("os", convs, 0.05, 0)  # seeded
    assert part != subset("os", convs, 0.05, 1) and part != subset("code", convs, 0.05, 0)
    assert subset("db", convs, 1.0, 0) == convs
    assert len(subset("db", _convs(3), 0.01, 0)) == 1  # at least one
    with pytest.raises(ValueError, match="expert_data for db"):
        subset("db", convs, 0.0, 0)


def test_expert_data_knob_is_checked_and_keeps_older_addresses():
    assert W.world_dir(W.recipe(expert_data=1)) == W.world_dir(W.recipe())
    assert W.world_dir(W.recipe(expert_data=0.05)) != W.world_dir(W.recipe())
    assert "expert_data" in W.recipe(expert_data={"code": 0.1, "os": 0.2, "db": 1.0})
    for bad in (0, -0.5, 1.5, {"code": 0.5}, True):
        with pytest.raises(ConfigError, match="expert_data"):
            W.recipe(expert_data=bad)


def test_the_world_trains_each_expert_on_its_share():
    """A micro world with ``expert_data``: the experts and the all-data model record how many of their family's
    gold trajectories they trained on (the stages it builds as the micro world does are copied, not rebuilt)."""
    pytest.importorskip("transformers")
    import shutil

    from tests.domains.test_os import rootfs_or_skip
    from tests.leaderboards.test_mini_tables import MICRO_WORLD

    rootfs_or_skip()
    plain = W.ensure_world(progress=False, **MICRO_WORLD)
    params = {**MICRO_WORLD, "expert_data": {"code": 0.5, "os": 1.0, "db": 0.25}}
    dst = W.world_dir(W.recipe(**params))
    for stage in ("data", "trajectories", "tokenizer", "base"):
        if not (dst / stage).exists():
            shutil.copytree(plain["dir"] / stage, dst / stage)
    w = W.ensure_world(progress=False, **params)
    gold = {f: len(json.loads((w["dir"] / "trajectories" / f"{f}_gold.json").read_text())) for f in F.FAMILIES}
    seen = {f: json.loads((w[f] / "training.json").read_text())["examples"] for f in F.FAMILIES}
    assert seen == {"code": round(0.5 * gold["code"]), "os": gold["os"], "db": max(1, round(0.25 * gold["db"]))}
    assert json.loads((w["all_data"] / "training.json").read_text())["examples"] == sum(seen.values())
