"""Seeds as one table: rows line up across seeds, mean and std are right, verdicts follow the spread."""

import json

import pytest

from harness.cli import main
from leaderboards.seed_spread import row_key, summarize

TASKS = ["a", "b"]


def report(seed, cyc, base, lam_detail):
    return {"seed": seed, "variant": "quick", "tasks": TASKS,
            "table1": {"Base model": {"a": base, "b": base},
                       f"Merge: task arithmetic, one lambda tuned on opt (lambda={lam_detail})": {"a": 0.5, "b": 0.5},
                       "CycleQD (100 generations)": {"a": cyc, "b": cyc}},
            "table2": {"+ cycle": {"a": 0.3, "b": 0.3}}}


def write(tmp_path, reports):
    dirs = []
    for r in reports:
        d = tmp_path / f"seed{r['seed']}"
        d.mkdir()
        (d / "report.json").write_text(json.dumps(r))
        dirs.append(d)
    return dirs


def test_row_key_drops_per_seed_details_only():
    assert row_key("Merge: TIES (density=0.5)") == "Merge: TIES" == row_key("Merge: TIES ({\"density\": 0.2})")
    assert row_key("Learned coefficients: CMA-ES (w=[0.1, 0.2])") == "Learned coefficients: CMA-ES"
    assert row_key("CycleQD (100 generations)") == "CycleQD (100 generations)"


def test_spread_statistics_and_verdicts(tmp_path):
    dirs = write(tmp_path, [report(0, 0.8, 0.1, 1.0), report(1, 0.9, 0.2, 1.2), report(2, 0.7, 0.3, 0.8)])
    s = summarize(dirs, tmp_path / "out")
    cyc = s["table1"]["CycleQD (100 generations)"]["avg"]
    assert cyc["mean"] == pytest.approx(0.8) and cyc["std"] == pytest.approx(0.1) and cyc["n"] == 3
    ta = "Merge: task arithmetic, one lambda tuned on opt"
    assert s["table1"][ta]["avg"]["n"] == 3  # one row, whatever lambda each seed picked
    assert s["cycleqd_vs"] == {"Base model": "above", ta: "above"}
    assert s["counts"] == {"above": 2, "within": 0, "below": 0}
    page = (tmp_path / "out" / "index.html").read_text()
    assert "80.0 ± 10.0" in page and "above 2" in page
    assert "| CycleQD (100 generations) | 80.0 ± 10.0 |" in (tmp_path / "out" / "spread.md").read_text()


def test_overlapping_spreads_are_within_and_lower_ones_below(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "b").mkdir()
    within = summarize(write(tmp_path / "w", [report(0, 0.45, 0.5, 1), report(1, 0.55, 0.6, 1)]), tmp_path / "o1")
    assert within["cycleqd_vs"]["Base model"] == "within"  # 50 +- 7 against 55 +- 7
    below = summarize(write(tmp_path / "b", [report(0, 0.45, 0.6, 1), report(1, 0.55, 0.7, 1)]), tmp_path / "o2")
    assert below["cycleqd_vs"]["Base model"] == "below"  # 50 +- 7 against 65 +- 7


def test_cli_spread(tmp_path, capsys):
    dirs = write(tmp_path, [report(0, 0.8, 0.1, 1.0), report(1, 0.9, 0.2, 1.2)])
    assert main(["spread", str(tmp_path / "out"), *map(str, dirs)]) == 0
    assert "CycleQD vs row" in capsys.readouterr().out
    assert main(["spread", str(tmp_path / "o2"), str(dirs[0])]) == 2  # one seed is not a spread
