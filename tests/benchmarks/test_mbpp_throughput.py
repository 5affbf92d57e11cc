"""Throughput of the MBPP+ judge: the 399 canonical solutions through our sandbox and through EvalPlus's
own checker, in the same run (base inputs; both with their expected outputs already cached).

EvalPlus is installed for this benchmark only (``pip install evalplus``); without it the test skips.
"""

import json
import os
import time

import pytest

from domains.coding import CodingDomain
from harness.domain import DomainContext
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "mbppplus" / "mbppplus.jsonl"


def test_mbpp_canonical_throughput_vs_evalplus(tmp_path, benchmark):
    pytest.importorskip("evalplus")
    from envs.sandbox.local import LocalSandbox

    if not LocalSandbox.available()[0] or not DATA.exists():
        pytest.skip("needs the local sandbox and the shared MBPP+ data")
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    text = "\n".join(json.dumps({"task_id": r["task_id"], "solution": r["canonical_solution"]}) for r in rows)
    os.environ["MBPP_OVERRIDE_PATH"] = str(DATA)
    from evalplus.evaluate import evaluate

    def run_evalplus(tag):
        samples = tmp_path / f"samples_{tag}.jsonl"  # a fresh file: EvalPlus asks before overwriting results
        samples.write_text(text)
        evaluate(dataset="mbpp", samples=str(samples), base_only=True, parallel=2, i_just_wanna_run=True)

    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), plus=False, workers=2)
    d.setup()
    gold = d.scripted_agent("gold")
    run_evalplus("warmup")  # warm-up: EvalPlus computes and caches its ground truth
    d.run(gold)  # warm-up: our expected outputs
    t0 = time.perf_counter()
    run_evalplus("timed")
    evalplus_s = time.perf_counter() - t0
    result = benchmark.pedantic(lambda: d.run(gold), rounds=1, iterations=1)
    ours_s = benchmark.stats.stats.min
    assert result.quality == 1.0
    benchmark.extra_info.update(ours_samples_per_s=len(rows) / ours_s, evalplus_samples_per_s=len(rows) / evalplus_s)
    print(f"\nMBPP+ base, 399 canonical solutions, 2 workers: ours {len(rows) / ours_s:.1f} samples/s "
          f"({ours_s:.1f} s), EvalPlus {len(rows) / evalplus_s:.1f} samples/s ({evalplus_s:.1f} s)")
