"""The world's regime gate, on the paper's own Table 1: the paper's setting must pass it."""

from leaderboards.mini_report import PAPER_CROSS_FAMILY_CHANGE, regime_text
from leaderboards.mini_tables import EXPERT_ROW, FAMILIES, regime

TASKS = ["mini-code", "mini-os", "mini-db"]
GEOMETRY = {"tau_over_theta": {}, "cosine": {}}


def table(base, experts, mean):
    """Table 1 rows from (code, os, db) fractions; ``experts`` by family."""
    row = lambda v: dict(zip(TASKS, v))  # noqa: E731
    return {"Base model": row(base), "Merge: mean of task vectors": row(mean),
            **{EXPERT_ROW[f]: row(experts[f]) for f in FAMILIES}}


def test_the_papers_table1_is_in_the_regime_and_its_mean_merge_beats_two_experts():
    # Kuroki et al., Table 1 (MBPP / OS / DB): base 67.3 / 25.2 / 5.3, the mean merge 72.9 / 42.6 / 24.7
    paper = table((0.673, 0.252, 0.053),
                  {"code": (0.704, 0.207, 0.212), "os": (0.663, 0.304, 0.0), "db": (0.658, 0.285, 0.424)},
                  (0.729, 0.426, 0.247))
    r = regime(paper, TASKS, GEOMETRY)
    assert r["holds"] and r["failed"] == []
    assert r["mean_merge_beats_an_expert"] and r["mean_merge_minus_expert"]["mini-db"] < 0
    assert round(r["retention"]["mini-db"], 2) == 0.52 and r["retention"]["mini-code"] > 1
    # what an expert does to the others' benchmarks: the coding expert lifts DB by 15.9 points
    assert round(r["cross_family_change"]["mini-code"]["mini-db"], 3) == 0.159
    assert abs(100 * r["mean_cross_family_change"] - 1.15) < 1e-9 and abs(PAPER_CROSS_FAMILY_CHANGE - 1.15) < 1e-9
    assert "(paper: +1.15, from -5.3 to +15.9)" in regime_text(r, TASKS)
    assert "beats the expert on its own family (Code by 2.5 points, OS by 12.2 points)" in regime_text(r, TASKS)


def test_a_world_whose_merge_loses_half_the_gains_fails_on_that_clause_alone():
    weak = table((0.5, 0.2, 0.5), {"code": (0.9, 0.1, 0.3), "os": (0.4, 0.6, 0.4), "db": (0.2, 0.0, 1.0)},
                 (0.6, 0.25, 0.6))
    r = regime(weak, TASKS, GEOMETRY)
    assert not r["holds"] and r["failed"] == ["mean_merge_keeps_half_the_gain"]
    assert not r["mean_merge_beats_an_expert"]
    assert "beats no expert on its own family" in regime_text(r, TASKS)
    assert round(r["cross_family_change"]["mini-db"]["mini-code"], 2) == -0.3
