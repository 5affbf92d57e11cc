"""Mini-world task families: the real domains judge their gold trajectories right and their noise wrong."""

import json
import random
import re

import pytest

from domains.mini import families as F
from domains.mini import world as W
from tests.domains.test_os import rootfs_or_skip


def test_splits_are_seeded_and_disjoint():
    for fam, spec in F.FAMILIES.items():
        tr, ev = F.make_splits(fam, 40, 20, seed=3)
        tr2, ev2 = F.make_splits(fam, 40, 20, seed=3)
        assert json.dumps(tr) == json.dumps(tr2) and json.dumps(ev) == json.dumps(ev2)
        assert not {spec["key"](s) for s in tr} & {spec["key"](s) for s in ev}
        assert json.dumps(F.make_splits(fam, 40, 20, seed=4)[1]) != json.dumps(ev)


def test_db_modification_samples_carry_the_judges_md5():
    _, ev = F.make_splits("db", 0, 40, seed=0)
    mods = [s for s in ev if s["type"][0] in ("INSERT", "UPDATE", "DELETE")]
    assert mods and all(len(s["answer_md5"]) == 32 for s in mods)
    assert len({s["answer_md5"] for s in mods}) == len(mods)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    r = W.recipe(n_train=12, n_noise=12, n_eval=4)
    root = tmp_path_factory.mktemp("mini_data")
    W._make_data(r)(root)
    return root


@pytest.mark.parametrize("family", ["code", "os", "db"])
def test_gold_solves_and_noise_mostly_fails_through_the_real_domain(family, data_root):
    if family == "os":
        rootfs_or_skip()
    spec = F.FAMILIES[family]
    gold = W.record(family, data_root, f"{family}_train.jsonl", spec["gold"], True, 0)
    assert len(gold) == 12  # every gold trajectory is judged solved
    assert gold[0][-1]["role"] == "assistant"
    if family != "code":  # multi-turn: the answer was read from a real observation
        assert any(m["role"] == "user" and m is not gold[0][0] for m in gold[0][-2:])
    noise = W.record(family, data_root, f"{family}_train.jsonl", spec["noise"](random.Random(0)), True, 0)
    assert len(noise) < 12  # a random template on the right arguments is mostly judged wrong


def test_per_family_knobs_split_the_data_and_keep_scalar_recipes_addresses(tmp_path):
    from harness.errors import ConfigError

    assert W.world_dir(W.recipe(n_noise=12)) == W.world_dir(W.recipe(n_noise=12))
    r = W.recipe(n_train=6, n_eval=4, n_noise={"code": 2, "os": 5, "db": 3})
    assert W.world_dir(r) != W.world_dir(W.recipe(n_train=6, n_eval=4, n_noise=5))
    W._make_data(r)(tmp_path)
    for fam, n in r["n_noise"].items():
        rows = (tmp_path / f"{fam}_noise.jsonl").read_text().splitlines()
        assert len(rows) == n and W.per_family(r, "n_noise", fam) == n
        # the eval instances are drawn first: the same whatever the noise count
        assert (tmp_path / f"{fam}_eval.jsonl").read_text().splitlines() == \
            [json.dumps(s, ensure_ascii=False) for s in F.make_splits(fam, 6, 4, r["seed"])[1]]
    for bad in ({"code": 1, "os": 1}, {"code": 1, "os": 1, "db": "x"}, {"code": 1, "os": 1, "db": 1, "sam": 1}):
        with pytest.raises(ConfigError, match="n_noise as a mapping"):
            W.recipe(n_noise=bad)


def _undrift(family, drifted, original):
    """The protocol put back: what the drift changed must be the protocol's form and nothing else."""
    if family == "code":
        name = re.search(r"assert (\w+)\(", original).group(1)
        return drifted.replace("def solution(", f"def {name}(", 1)
    if family == "os":
        return re.sub(r"Answer: (.*)$", r"Act: answer(\1)", drifted, flags=re.DOTALL)
    return drifted.replace("```SQL\n", "```sql\n").replace("\nAnswer:", "\nFinal Answer:")


@pytest.mark.parametrize("family", ["code", "os", "db"])
def test_drifted_gold_does_the_same_action_and_fails_the_real_judge(family, data_root):
    """format_drift rewrites the protocol only: the drifted reply keeps the action, and the judge rejects it."""
    from domains.mini.drift import PROMPT_PREFIX, drift_conversation

    if family == "os":
        rootfs_or_skip()
    gold = F.FAMILIES[family]["gold"]

    def drifted(sample, turn, messages):
        conv = (messages or []) + [{"role": "assistant", "content": gold(sample, turn, messages)}]
        if family == "code":  # one turn: the question is the sample's prompt
            conv = [{"role": "user", "content": sample["prompt"]}] + conv
        return drift_conversation(family, conv)[-1]["content"]

    convs = W.record(family, data_root, f"{family}_train.jsonl", gold, True, 0)
    skip = PROMPT_PREFIX[family]
    for conv in convs:
        d = drift_conversation(family, conv)
        assert d[:skip] == conv[:skip]  # the prompt's fixed example turns are never rewritten
        if family == "os":
            assert conv[:skip] == F.OS_ONESHOT
        assert [m for m in d if m["role"] != "assistant"] == [m for m in conv if m["role"] != "assistant"]
        question = next(m["content"] for m in conv[skip:] if m["role"] == "user")
        changed = [(a["content"], b["content"]) for a, b in zip(d, conv) if a != b]
        assert changed and changed[-1][1] == conv[-1]["content"]  # the final reply is among the rewritten
        assert all(_undrift(family, x, question) == y for x, y in changed)
    solved = W.record(family, data_root, f"{family}_train.jsonl", drifted, True, 0)
    # a DB modification that leaves the table as it was is solved by doing nothing (judged by md5 alone)
    idle = W.record(family, data_root, f"{family}_train.jsonl",
                    lambda s, t, m: 'Done.\nAction: Answer\nFinal Answer: ["none"]', True, 0) if family == "db" else []
    assert {json.dumps(c[:3]) for c in solved} <= {json.dumps(c[:3]) for c in idle}
    assert len(solved) < len(convs) // 2


def test_format_drift_is_seeded_checked_and_keeps_older_addresses():
    from domains.mini.drift import drift_some
    from harness.errors import ConfigError

    # the default world's address and the previous default's (C), pinned: a change of either must be deliberate
    # (it rebuilds every cached world and voids the committed references)
    assert W.world_dir(W.recipe()).name == "world-2dc2f2ca6277"
    C = W.WORLD_C
    assert W.world_dir(W.recipe(**C)).name == "world-c7068d9d0c28"
    assert W.world_dir(W.recipe(**{**C, "format_drift": {"code": 0, "os": 0, "db": 0}})) == W.world_dir(W.recipe(**C))
    assert W.world_dir(W.recipe(**{**C, "format_drift": 0.5})) != W.world_dir(W.recipe(**C))
    assert W.world_dir(W.recipe(**{**C, "format_drift": {"code": 0.5, "os": 0.5, "db": 0.5}})) == \
        W.world_dir(W.recipe(**{**C, "format_drift": 0.5}))
    assert W.per_family(W.recipe(**C), "format_drift", "os") == 0.0
    assert W.per_family(W.recipe(), "format_drift", "os") == 0.4
    prefix = [dict(m) for m in F.OS_ONESHOT]
    convs = [prefix + [{"role": "user", "content": "q"}, {"role": "assistant", "content": "Act: answer(3)"}]] * 400
    (a, n), (b, _) = drift_some("os", convs, 0.6, "0:noise"), drift_some("os", convs, 0.6, "0:noise")
    assert a == b and n == sum(c[-1]["content"] == "Answer: 3" for c in a) and 0.5 < n / 400 < 0.7
    assert all(c[: len(prefix)] == F.OS_ONESHOT for c in a)  # the example's "Act: answer(3)" stays
    assert drift_some("os", convs, 0.0, 1) == (convs, 0)
    for bad in (1.5, -0.1, {"code": 0.1, "os": 0.1}, True):
        with pytest.raises(ConfigError, match="format_drift"):
            W.recipe(format_drift=bad)
