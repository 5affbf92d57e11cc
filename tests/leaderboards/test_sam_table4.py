"""Table 4 end to end on a micro SAM world: ten pairwise CycleQD runs, similarity, report files."""

import pytest

from domains.sam.modeling import sam_modeling
from harness.errors import ConfigError

try:
    sam_modeling()
except ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)
pytest.importorskip("pycocotools")

from leaderboards.sam_table4 import pearson_ci, run_table4  # noqa: E402

MICRO = {"world": {"n_pretrain": 24, "n_train": 12, "n_eval": 8, "pretrain_steps": 6, "finetune_steps": 4,
                   "batch_size": 2}, "generations": 2, "bounds": [0.0, 1.0]}


def test_micro_table4(tmp_path):
    rep = run_table4("micro", 0, tmp_path, progress=False, variant=MICRO)
    assert [r["pair"] for r in rep["table4"]] == ["CAM+POL", "CAM+SKL", "CAM+LEA", "CAM+CRK", "POL+SKL", "POL+LEA",
                                                  "POL+CRK", "SKL+LEA", "SKL+CRK", "LEA+CRK"]
    for r in rep["table4"]:
        assert 0.0 < r["similarity"] <= 1.0
        assert r["raw"]["cycleqd"].keys() == {r["a"], r["b"], "avg"}
    assert set(rep["experts"]) == {"base", "camouflage", "polyp", "skin", "leaf", "crack", "box as mask"}
    box = {t: v["miou"] for t, v in rep["experts"]["box as mask"].items()}
    assert all(0.3 < v < 1 for t, v in box.items() if t != "crack")
    assert 0.05 < box["crack"] < 0.35  # a thin line fills little of its box: the box says little about the mask
    # r and its CI count only the pairs where both values are defined (a micro expert may score 0 on its task)
    defined = [r for r in rep["table4"] if r["avg"] is not None and r["similarity"] is not None]
    assert rep["n_pairs"] == len(defined) >= 4
    assert (rep["r_avg_similarity_ci95"] is None) == (rep["r_avg_similarity"] is None)
    lo, hi = rep["similarity_range"]
    assert lo == min(r["similarity"] for r in rep["table4"]) and hi == max(r["similarity"] for r in rep["table4"])
    reg = rep["regime"]
    assert set(reg["own_gain"]) == set(reg["others_change"]) == set(rep["tasks"])
    assert reg["own_gain"]["crack"] == pytest.approx(rep["experts"]["crack"]["crack"]["miou"]
                                                     - rep["experts"]["base"]["crack"]["miou"])
    md = (tmp_path / "table4.md").read_text()
    assert f"{len(defined)} pairs" in md and f"similarities span {lo:.2f} to {hi:.2f}" in md and "own-task gain" in md
    for name in ("table4.md", "table4.csv", "report.json", "index.html", "pair_leaf_crack/results.json"):
        assert (tmp_path / name).exists(), name
    assert (tmp_path / "index.html").read_text().count("data:image/png;base64,") == 20
    again = run_table4("micro", 0, tmp_path, progress=False, variant=MICRO)  # reuses the finished runs
    assert again["table4"] == rep["table4"]
    from leaderboards.regression import compare_table4

    assert compare_table4(rep, rep) == []
    shifted = {**rep, "table4": [dict(r, similarity=r["similarity"] - 0.5) if i == 0 else r
                                 for i, r in enumerate(rep["table4"])]}
    assert any("CAM+POL / similarity" in p for p in compare_table4(rep, shifted))


def test_pearson_ci_is_wide_with_few_pairs():
    lo, hi = pearson_ci(0.83, 6)
    assert 0.0 < lo < 0.1 and 0.97 < hi < 0.99  # the paper's r over its six pairs
    lo10, hi10 = pearson_ci(0.83, 10)
    assert lo10 > lo and hi10 < hi  # more pairs, narrower
    assert pearson_ci(None, 6) is None and pearson_ci(0.5, 3) is None
