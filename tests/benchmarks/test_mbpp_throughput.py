"""Throughput of the MBPP+ judge: the 399 canonical solutions (base inputs, 2 workers, expected outputs
already cached) through our sandbox and through EvalPlus's own checker, reported as a ratio in one run.

Each side runs in a process of its own (``tests/benchmarks/mbpp_sides.py``): run in this process,
EvalPlus's ~800 MB ground truth would make every fork of ours copy it, and the comparison would measure
that. EvalPlus (the test extra installs it) reads the shared MBPP+ file; nothing is downloaded.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, SHARED_DATA

DATA = SHARED_DATA / "mbppplus" / "mbppplus.jsonl"
FLOOR = 1.0  # ours / EvalPlus in samples per second: the sandbox must not make judging slower than EvalPlus


def side(name: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "tests.benchmarks.mbpp_sides", name, "--workers", "2"], cwd=REPO,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, f"{name}: {res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_mbpp_canonical_throughput_vs_evalplus(benchmark):
    pytest.importorskip("evalplus")
    from envs.sandbox.local import LocalSandbox

    if not LocalSandbox.available()[0] or not DATA.exists():
        pytest.skip("needs the local sandbox and the shared MBPP+ data")
    got = benchmark.pedantic(lambda: {name: side(name) for name in ("evalplus", "ours")}, rounds=1, iterations=1)
    ours, theirs = got["ours"], got["evalplus"]
    assert ours["passed"] == ours["samples"] == 399, ours
    rate = {k: v["samples"] / v["seconds"] for k, v in got.items()}
    ratio = rate["ours"] / rate["evalplus"]
    benchmark.extra_info.update(ours_samples_per_s=rate["ours"], evalplus_samples_per_s=rate["evalplus"],
                                ratio=ratio, ours_cpu_s=ours["cpu_s"], evalplus_cpu_s=theirs["cpu_s"],
                                evalplus_passed=theirs["passed"])
    print(f"\nMBPP+ base, 399 canonical solutions, 2 workers, each side in its own process: ours "
          f"{rate['ours']:.1f} samples/s ({ours['seconds']:.1f} s, {ours['cpu_s']:.1f} CPU s), EvalPlus "
          f"{rate['evalplus']:.1f} samples/s ({theirs['seconds']:.1f} s, {theirs['cpu_s']:.1f} CPU s, "
          f"{theirs['passed']} passed): ratio {ratio:.2f}")
    assert ratio >= FLOOR, f"ours {rate['ours']:.1f} vs EvalPlus {rate['evalplus']:.1f} samples/s"
