"""`cycleqd bench scale` on a tiny Llama shape: the report's fields and what they must satisfy."""

import json

from harness.cli import main
from harness.scale_bench import llama_shape


def test_shapes_follow_the_size():
    s = llama_shape(int(1.1e9))
    assert s.hidden == 2048 and s.vocab == 32000 and 0.8e9 < s.params() < 1.4e9
    for n in (2e5, 5e7, 3e8, 8e9):
        assert 0.6 * n < llama_shape(int(n)).params() < 1.5 * n, n


def test_bench_scale_reports_memory_time_and_depth(tmp_path, capsys):
    assert main(["bench", "scale", "--params", "3e5", "--generations", "4", "--root", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    rep = json.loads(captured.out.strip())  # stdout: exactly the one JSON line; progress goes to stderr
    assert "bench scale: generation 4/4" in captured.err
    for key in ("checkpoint_bytes", "peak_rss_bytes", "child_seconds", "copy_seconds", "max_lineage_depth",
                "generations"):
        assert key in rep, key
    assert set(rep["child_seconds"]) == {"merge", "mutation", "export"}
    assert rep["generations"] == 4 and rep["max_lineage_depth"] >= 1
    assert rep["fresh_export_rebuilt"] >= 1  # a fresh store rebuilt the final model's lineage from recipes
    assert rep["checkpoint_bytes"] > 2 * 0.6 * 3e5  # bf16
    # the disk budget holds after every eviction; before one, at most the child just built is beyond it
    assert rep["stored_bytes_max"] <= rep["disk_budget_bytes"] + rep["checkpoint_bytes"] + 4096
    so_far = json.loads((tmp_path / "work" / "progress.json").read_text())  # kept if a long run is stopped
    assert so_far["generation"] == 4 and len(so_far["children"]) == 4 and so_far["peak_rss_bytes"] > 0
    assert not (tmp_path / "work" / "store").exists() or not list((tmp_path / "work" / "store").glob("*.safetensors"))
