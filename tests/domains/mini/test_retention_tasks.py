"""The mini retention tasks' documents: conversations no model of the world was trained on."""

import json
import random

import pytest

from domains.mini import families as F
from domains.mini import world as W
from domains.mini.retention_tasks import held_out
from harness.errors import ConfigError
from tests.domains.test_os import rootfs_or_skip


def _world(tmp_path, pretrain_gold: float, families=("code", "db"), n_noise: int = 5):
    """A world folder as far as the retention tasks read it: its recipe, data, gold and noise trajectories."""
    r = W.recipe(n_train=6, n_noise=n_noise, n_eval=4, pretrain_gold=pretrain_gold)
    world = tmp_path / f"world-{pretrain_gold}"
    (world / "data").mkdir(parents=True)
    W._make_data(r)(world / "data")
    (world / "trajectories").mkdir()
    for fam in families:
        spec = F.FAMILIES[fam]
        gold = W.record(fam, world / "data", f"{fam}_train.jsonl", spec["gold"], True, 0)
        noise = W.record(fam, world / "data", f"{fam}_noise.jsonl", spec["noise"](random.Random(f"noise:{fam}:0")),
                         False, 0)
        (world / "trajectories" / f"{fam}_gold.json").write_text(json.dumps(gold))
        (world / "trajectories" / f"{fam}_noise.json").write_text(json.dumps(noise))
    (world / "recipe.json").write_text(json.dumps(r))
    return world


@pytest.mark.parametrize("family", ["code", "os", "db"])
def test_a_world_pretrained_on_every_gold_conversation_gets_the_noise_questions_gold_replies(tmp_path, family):
    if family == "os":
        rootfs_or_skip()
    world = _world(tmp_path, 1.0, (family,), n_noise=24)
    pretrained = [json.loads((world / "trajectories" / f"{family}_{k}.json").read_text()) for k in ("gold", "noise")]
    docs = held_out(world, family)
    recorded = json.loads((world / "retention_gold" / family / "gold.json").read_text())
    assert 0 < len(docs) <= len(recorded) <= 24
    # none was pretrained on: neither a training gold conversation nor one the noise agent happened to hold
    assert not {json.dumps(c) for c in docs} & {json.dumps(c) for part in pretrained for c in part}
    dropped = [c for c in recorded if c not in docs]
    assert all(c in pretrained[1] for c in dropped)
    assert dropped  # the seeded noise agent holds a few gold conversations word for word in every family
    assert held_out(world, family) == docs  # recorded once, then read back


def test_a_world_with_a_gold_tail_keeps_it_and_records_nothing(tmp_path):
    world = _world(tmp_path, 0.5)
    trained = json.loads((world / "trajectories" / "code_gold.json").read_text())
    assert held_out(world, "code") == trained[round(0.5 * len(trained)):]
    assert not (world / "retention_gold").exists()
    with pytest.raises(ConfigError, match="not a built mini world"):
        held_out(tmp_path / "nothing", "code")
