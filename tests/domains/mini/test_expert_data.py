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


def test_expert_data_share_is_what_an_expert_would_train_on(tmp_path):
    # the same selection the world's expert stage makes, on recorded-looking gold trajectories
    for fam in F.FAMILIES:
        (tmp_path / f"{fam}_gold.json").write_text(json.dumps(_convs(200)))
    r = W.recipe(expert_data={"code": 0.1, "os": 0.5, "db": 1.0})
    sizes = {f: len(subset(f, W._load_convs(tmp_path, [f], "gold"), float(W.per_family(r, "expert_data", f)),
                           r["seed"])) for f in F.FAMILIES}
    assert sizes == {"code": 20, "os": 100, "db": 200}
