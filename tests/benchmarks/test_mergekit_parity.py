"""``cycleqd merge`` equals mergekit's output (float32, <= 1e-6 relative per tensor) for task_arithmetic,
linear and ties with mergekit's rules (``trim_count=floor_min1``, ``ties_zero_sign=positive``).

Opt-in: mergekit is LGPL and lives only in a benchmark environment, never in ours. Set
CYCLEQD_MERGEKIT_VENV to a virtual environment holding ``bin/mergekit-yaml`` (see scripts/bench_mergekit.py);
without it the test is skipped. Both tools run as subprocesses of scripts/bench_mergekit.py on small
Llama-shaped float32 checkpoints (CYCLEQD_MERGEKIT_PARAMS, default 2e6 parameters).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

VENV = os.environ.get("CYCLEQD_MERGEKIT_VENV", "")


@pytest.mark.skipif(not VENV or not (Path(VENV) / "bin" / "mergekit-yaml").exists(),
                    reason="set CYCLEQD_MERGEKIT_VENV to a venv with mergekit installed (bin/mergekit-yaml) "
                           "to compare against mergekit")
def test_cycleqd_merge_equals_mergekit(tmp_path):
    params = os.environ.get("CYCLEQD_MERGEKIT_PARAMS", "2e6")
    out = tmp_path / "parity.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_mergekit.py"), "--mk-venv", VENV,
                           "--root", str(tmp_path), "--parity-params", params, "--speed-params", "0",
                           "--methods", "task_arithmetic,linear,ties", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert out.exists(), proc.stdout + proc.stderr
    parity = json.loads(out.read_text())["parity"]["methods"]
    assert set(parity) == {"task_arithmetic", "linear", "ties"}
    for method, rep in parity.items():
        w = rep["worst_without_threshold_ties"]
        assert w["max_rel"] <= 1e-6 and w["norm_rel"] <= 1e-6, (method, rep)
        if method == "ties":  # the same arithmetic: bit-equal except where a trim breaks a magnitude tie
            assert rep["entries_differing"] == rep["at_threshold_ties"], rep
