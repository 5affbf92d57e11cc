"""A scaled expert's replies through the real domain: the scales are the models they name, verdicts are the judge's."""

import json

import pytest

pytest.importorskip("transformers")

from domains.mini.world import ensure_world  # noqa: E402
from leaderboards.mini_replies import main, replies, scaled_state, task_vector  # noqa: E402
from tests.domains.test_os import rootfs_or_skip  # noqa: E402
from tests.leaderboards.test_mini_tables import MICRO_WORLD  # noqa: E402


def test_scale_zero_is_the_base_and_scale_one_the_expert():
    rootfs_or_skip()
    from safetensors.torch import load_file

    w = ensure_world(progress=False, **MICRO_WORLD)
    base, expert = (load_file(str(w[k] / "model.safetensors")) for k in ("base", "code"))
    b, tau = task_vector(w["base"], w["code"])
    for scale, want in ((0.0, base), (1.0, expert)):
        got = scaled_state(b, tau, scale)
        assert all(torch_equal(got[k], want[k].float()) for k in want)
    half = scaled_state(b, tau, 0.5)
    k = next(k for k in base if not torch_equal(base[k], expert[k]))
    assert torch_equal(half[k], (base[k].float() + expert[k].float()) / 2)


def torch_equal(a, b):
    import torch

    return bool(torch.allclose(a, b, rtol=0, atol=1e-6))


def test_replies_are_recorded_per_turn_and_judged(capsys):
    rootfs_or_skip()
    rows = replies("os", [0.0, 1.0], 2, MICRO_WORLD)
    assert len(rows) == 2
    for row in rows:
        assert row["gold"].strip() and row["question"]
        assert set(row["models"]) == {"0", "1"}
        for m in row["models"].values():
            assert 1 <= len(m["replies"]) <= 3 and all(isinstance(r, str) for r in m["replies"])  # round_limit 3
            assert m["score"] in (0.0, 1.0) and m["status"] != "env_error"
    assert main(["os", "--scale", "1", "--n", "1", "--world", json.dumps(MICRO_WORLD), "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["models"]["1"] == rows[0]["models"]["1"]  # greedy: the same replies and verdict again


def test_bad_world_is_a_one_line_error(capsys):
    assert main(["code", "--world", "{not json"]) == 2
    assert "--world is not JSON" in capsys.readouterr().err
    assert main(["code", "--world", '{"no_such_knob": 1}']) == 2
    assert "no_such_knob" in capsys.readouterr().err
    assert main(["code", "--scale", "0.5", "0.50", "--world", '{"n_train": 3}']) == 2  # checked before any build
    assert "each scale once" in capsys.readouterr().err
