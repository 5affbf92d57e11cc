import csv
import json

import pytest

from harness.runner.runner import run_from_config
from leaderboards.emit import emit_run, markdown_table
from tests.conftest import VECTOR_WORLD

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d, _ = run_from_config(VECTOR_WORLD, ["qd.generations=12", "runner.progress=false", "runner.snapshot_every=4"],
                           run_dir=tmp_path_factory.mktemp("lb") / "r")
    return d


def test_tables_agree_with_results(run_dir):
    res = json.loads((run_dir / "results.json").read_text())
    rows = list(csv.DictReader(open(run_dir / "leaderboard" / "leaderboard.csv")))
    assert [r["model"] for r in rows] == [r["model"] for r in res["rows"]]
    cyc = next(r for r in rows if r["model"] == "cycleqd")
    assert float(cyc["test/avg"]) == pytest.approx(res["rows"][-1]["test"]["avg"])
    md = (run_dir / "leaderboard" / "leaderboard.md").read_text()
    assert f"{100 * res['rows'][-1]['test']['avg']:.1f}" in md.splitlines()[-1]
    lb = json.loads((run_dir / "leaderboard" / "leaderboard.json").read_text())
    assert lb["rows"][-1]["test/avg"] == res["rows"][-1]["test"]["avg"]


def test_heatmaps_for_last_or_any_snapshot(run_dir):
    snaps = sorted(p.name for p in (run_dir / "snapshots").iterdir())
    assert snaps == ["gen_000000.json", "gen_000004.json", "gen_000008.json", "gen_000012.json"]
    written = emit_run(run_dir, generation=4)
    maps = [p for k, p in written.items() if k.startswith("heatmap:")]
    assert len(maps) == 3 and all("gen000004" in p.name and p.read_bytes()[:8] == PNG for p in maps)
    with pytest.raises(FileNotFoundError, match="generation 5"):
        emit_run(run_dir, generation=5)


def test_missing_scores_print_na():
    res = {"tasks": ["a", "b"], "splits": ["test"], "rows": [
        {"model": "x", "model_id": "m", "test": None}, {"model": "y", "model_id": "n", "test": {"a": 0.5, "b": 1.0, "avg": 0.75}}]}
    md = markdown_table(res)
    assert "| x | n/a | n/a | n/a |" in md and "| y | 50.0 | 100.0 | 75.0 |" in md
