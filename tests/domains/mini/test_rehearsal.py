"""rehearsal: an expert's extra conversations come from the base's own corpus of the other families."""

import json

import pytest

from domains.mini import families as F
from domains.mini import world as W
from harness.errors import ConfigError


@pytest.fixture
def traj(tmp_path):
    for fam in F.FAMILIES:  # conversations that name their family, kind and number
        for kind, n in (("gold", 30), ("noise", 10)):
            convs = [[{"role": "user", "content": f"{fam} {kind} {i}"}, {"role": "assistant", "content": "x"}]
                     for i in range(n)]
            (tmp_path / f"{fam}_{kind}.json").write_text(json.dumps(convs))
    return tmp_path


def _tag(conv):
    return conv[0]["content"].split()[0]


def test_rehearsal_draws_from_the_base_corpus_of_the_other_families(traj):
    r = W.recipe(rehearsal={"code": 0.5, "os": 0.0, "db": 4.0}, pretrain_gold=0.5, format_drift=0.0)
    noise, gold, drifted = W.base_corpus(r, traj, "os")
    assert (len(noise), len(gold), drifted) == (10, 15, {})  # the base sees half the gold here
    extra = W.rehearsal_convs(r, traj, "code", 20)
    assert len(extra) == 10 and {_tag(c) for c in extra} <= {"os", "db"}
    pool = [c for f in ("os", "db") for part in W.base_corpus(r, traj, f)[:2] for c in part]
    assert all(c in pool for c in extra)
    assert extra == W.rehearsal_convs(r, traj, "code", 20)  # seeded
    assert W.rehearsal_convs(r, traj, "os", 20) == []
    assert len(W.rehearsal_convs(r, traj, "db", 1000)) == len(pool)  # capped by the corpus


def test_rehearsal_knob_is_checked_and_keeps_older_addresses():
    assert W.world_dir(W.recipe(rehearsal=0)) == W.world_dir(W.recipe())
    assert W.world_dir(W.recipe(rehearsal=0.5)) != W.world_dir(W.recipe())
    for bad in (-0.1, 5, {"code": 1}, True):
        with pytest.raises(ConfigError, match="rehearsal"):
            W.recipe(rehearsal=bad)
