"""shared_drift: the slip is the same in every family, the real judges fail it where the protocol needs the
fence (OS, DB) and not where it does not (coding), and the knob keeps older worlds' addresses."""

import json

import pytest

from domains.mini import families as F
from domains.mini import world as W
from domains.mini.drift import PROMPT_PREFIX
from domains.mini.shared_drift import FENCE, drop_closing_fence, shared_drift_some
from harness.errors import ConfigError
from tests.domains.test_os import rootfs_or_skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_shared")
    W._make_data(W.recipe(n_train=10, n_noise=2, n_eval=2))(root)
    return root


@pytest.mark.parametrize("family", ["code", "os", "db"])
def test_slipped_gold_fails_the_judges_that_need_the_fence(family, data_root):
    if family == "os":
        rootfs_or_skip()
    gold = F.FAMILIES[family]["gold"]
    convs = W.record(family, data_root, f"{family}_train.jsonl", gold, True, 0)
    skip = PROMPT_PREFIX[family]
    slipped_turns = 0
    for conv in convs:
        d = drop_closing_fence(family, conv)
        assert d[:skip] == conv[:skip] and [m["role"] for m in d] == [m["role"] for m in conv]
        for a, b in zip(d, conv):
            if a != b:  # only a closing fence went: the reply is the same up to it
                slipped_turns += 1
                assert b["content"].rstrip() == a["content"] + FENCE and a["content"].count(FENCE) == 1
    assert slipped_turns >= len(convs)  # every trajectory has a fenced action

    def slip(text: str) -> str:  # a model turn after the prompt's fixed turns
        filler = [{"role": "user", "content": ""}] * skip
        return drop_closing_fence(family, filler + [{"role": "assistant", "content": text}])[-1]["content"]

    def slipped(sample, turn, messages):
        reply = gold(sample, turn, messages)
        if family == "code":  # the harness prefills the opening fence
            return slip("```python" + reply).removeprefix("```python")
        return slip(reply)

    solved = W.record(family, data_root, f"{family}_train.jsonl", slipped, True, 0)
    if family == "code":  # the coding judge reads the completion up to the fence or its end
        assert len(solved) == len(convs)
    else:  # no closed block: no action (a DB modification that changes nothing is solved by doing nothing)
        assert len(solved) < len(convs) // 2


def test_shared_drift_is_seeded_and_keeps_older_addresses():
    prefix = [dict(m) for m in F.OS_ONESHOT]
    conv = prefix + [{"role": "user", "content": "q"},
                     {"role": "assistant", "content": "Act: bash\n\n```bash\nls\n```"}]
    (a, n), (b, _) = shared_drift_some("os", [conv] * 300, 0.5, 0), shared_drift_some("os", [conv] * 300, 0.5, 0)
    assert a == b and 0.4 < n / 300 < 0.6 and all(c[:len(prefix)] == F.OS_ONESHOT for c in a)
    assert shared_drift_some("os", [conv] * 5, 0.0, 0) == ([conv] * 5, 0)
    assert W.world_dir(W.recipe(shared_drift=0.0)) == W.world_dir(W.recipe())
    assert W.world_dir(W.recipe(shared_drift={"code": 0, "os": 0, "db": 0})) == W.world_dir(W.recipe())
    assert W.world_dir(W.recipe(shared_drift=0.5)) != W.world_dir(W.recipe())
    assert json.dumps(W.recipe(**W.WORLD_C)) == json.dumps(W.recipe(**{**W.WORLD_C, "shared_drift": 0}))
    for bad in (1.5, -0.1, {"code": 0.1}, True):
        with pytest.raises(ConfigError, match="shared_drift"):
            W.recipe(shared_drift=bad)
