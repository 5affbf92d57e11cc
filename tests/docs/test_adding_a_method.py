"""docs/adding-a-method.md, executed: a method written outside this repository (one module, one registry
line, one config) runs beside the built-in ones in a declarative leaderboard."""

import json
import re
import textwrap

from harness.cli import main
from harness.registry import METHODS
from tests.conftest import REPO

DOC = (REPO / "docs" / "adding-a-method.md").read_text()


def _block(lang: str, n: int = 0) -> str:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, re.S)[n]


def test_the_documented_method_runs_in_a_leaderboard(tmp_path, monkeypatch):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "my_methods.py").write_text(textwrap.dedent(_block("python")))
    table = _block("yaml").replace("configs/vector_world.yaml", str(REPO / "configs" / "vector_world.yaml"))
    table = table.replace("[qd.generations=30]", "[qd.generations=6, runner.progress=false]")
    (tmp_path / "my_table.yaml").write_text(table)
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    try:
        assert main(["leaderboard", "table", "--config", str(tmp_path / "my_table.yaml"), "--out", str(tmp_path / "out"),
                     "--quiet"]) == 0
        rep = json.loads((tmp_path / "out" / "report.json").read_text())
        labels = list(rep["table"])
        assert labels[0] == "Mean merge" and labels[2] == "CycleQD"
        assert re.fullmatch(r"Task arithmetic \(lambda=(0\.5|1\.0|1\.5)\)", labels[1])
        assert all(0 <= v <= 1 for row in rep["table"].values() for v in row.values())
        rows = json.loads((tmp_path / "out" / "rows.json").read_text())
        assert sum(k.startswith("opt:ta:") for k in rows) == 3  # chose on opt ...
        assert sum(k.startswith("test:ta:") for k in rows) == 1  # ... reported one model on test
        assert (tmp_path / "out" / "table.md").read_text().count("|") > 10
        # the same table again: every evaluation is reused
        assert main(["leaderboard", "table", "--config", str(tmp_path / "my_table.yaml"), "--out", str(tmp_path / "out"),
                     "--quiet", "--check", str(tmp_path / "out")]) == 0
    finally:
        METHODS.unregister("ta_lambda")


def test_a_row_naming_an_unknown_method_fails_before_anything_runs(tmp_path):
    (tmp_path / "t.yaml").write_text(f"run_config: {REPO / 'configs' / 'vector_world.yaml'}\n"
                                     "rows: [{label: x, method: nope}]\n")
    assert main(["leaderboard", "table", "--config", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
