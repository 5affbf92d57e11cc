"""expert_kinds: a trajectory's kind read from its question, the seeded choice of kinds, the recipe knob."""

import json

import pytest

from domains.coding import user_turn
from domains.mini import families as F
from domains.mini import kinds as K
from domains.mini import world as W
from harness.errors import ConfigError
from tests.domains.test_os import rootfs_or_skip


def _conversation(family: str, s: dict) -> list[dict]:
    """The prompt the real domains write for sample ``s`` (the model's turns do not matter to the kind)."""
    if family == "code":
        return [{"role": "system", "content": F.CODE_SYSTEM}, {"role": "user", "content": user_turn(s)}]
    if family == "os":
        return [dict(m) for m in F.OS_ONESHOT] + [
            {"role": "user", "content": f"Now, I will start a new problem in a new OS. My problem is:\n\n{s['description']}"}]
    return [{"role": "user", "content": F.DB_INSTRUCTION}, {"role": "assistant", "content": "Ok."},
            {"role": "user", "content": f"{s['description']}\n{s['add_description']}"}]


@pytest.mark.parametrize("family", ["code", "os", "db"])
def test_every_instance_kind_is_read_back_from_its_question(family):
    train, ev = F.make_splits(family, 400, 100, seed=5)
    got = [K.kind_of(family, _conversation(family, s)) for s in train + ev]
    assert got == [s["mini"]["kind"] for s in train + ev]
    assert set(got) == set(K.kinds_of(family))  # every kind occurs, so every pattern was exercised


def test_recorded_trajectories_keep_their_kind(tmp_path):
    """On conversations recorded through the real domains (what the world's experts train on)."""
    r = W.recipe(n_train=12, n_noise=2, n_eval=2)
    W._make_data(r)(tmp_path)
    for family in ("code", "db", "os"):
        if family == "os":
            rootfs_or_skip()
        rows = [json.loads(x) for x in (tmp_path / f"{family}_train.jsonl").read_text().splitlines()]
        convs = W.record(family, tmp_path, f"{family}_train.jsonl", F.FAMILIES[family]["gold"], True, 0)
        assert len(convs) == len(rows) == 12
        assert [K.kind_of(family, c) for c in convs] == [s["mini"]["kind"] for s in rows]
        keep = sorted({s["mini"]["kind"] for s in rows})[:2]
        assert K.keep_kinds(family, convs, keep) == [c for c, s in zip(convs, rows) if s["mini"]["kind"] in keep]


def test_unknown_question_is_refused():
    with pytest.raises(ValueError, match="cannot tell the kind"):
        K.kind_of("db", _conversation("db", {"description": "Drop the table.", "add_description": ""}))


def test_chosen_kinds_are_seeded_sized_and_bounded():
    for family in ("code", "os", "db"):
        n = len(K.kinds_of(family))
        assert K.chosen_kinds(family, 1.0, 0) == K.kinds_of(family)
        half = K.chosen_kinds(family, 0.5, 0)
        assert half == K.chosen_kinds(family, 0.5, 0) and len(half) == max(1, round(0.5 * n))
        assert set(half) <= set(K.kinds_of(family)) and len(K.chosen_kinds(family, 0.01, 0)) == 1
    assert any(K.chosen_kinds("code", 0.5, s) != K.chosen_kinds("code", 0.5, 0) for s in range(1, 6))
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match="expert_kinds"):
            K.chosen_kinds("os", bad, 0)


def test_expert_kinds_knob_is_checked_and_keeps_older_addresses():
    # all kinds is the world as before: the default's address (pinned in test_families) does not move
    assert W.world_dir(W.recipe(expert_kinds=1.0)) == W.world_dir(W.recipe())
    assert W.world_dir(W.recipe(expert_kinds={"code": 1, "os": 1, "db": 1})) == W.world_dir(W.recipe())
    narrow = W.recipe(expert_kinds={"code": 0.5, "os": 1.0, "db": 0.5})
    assert W.world_dir(narrow) != W.world_dir(W.recipe())
    assert W.per_family(narrow, "expert_kinds", "code") == 0.5 and W.per_family(W.recipe(), "expert_kinds", "os") == 1.0
    for bad in (0, 1.2, {"code": 0.5, "os": 0.5}, True, "half"):
        with pytest.raises(ConfigError, match="expert_kinds"):
            W.recipe(expert_kinds=bad)
