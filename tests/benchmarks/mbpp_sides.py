"""One side of the MBPP+ throughput comparison, in a process of its own: ``python -m
tests.benchmarks.mbpp_sides ours|evalplus [--workers N]``. Prints one JSON line (seconds, cpu_s,
samples, passed) for the timed run, after a warm-up run that fills the side's cache of expected outputs.

Each side runs alone because EvalPlus keeps its ground truth (a ~800 MB pickle) in the process: sharing
it would make every fork of ours copy a 2 GB process, and the comparison would measure that.
EvalPlus reads the shared MBPP+ file (``MBPP_OVERRIDE_PATH``, set before it is imported): nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "mbppplus" / "mbppplus.jsonl"


def _cpu_s() -> float:
    """CPU seconds of this process and of every child it waited for (sandboxes, EvalPlus's workers)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def ours(workers: int) -> dict:
    from domains.coding import CodingDomain
    from harness.domain import DomainContext

    d = CodingDomain(task="coding", ctx=DomainContext(None, 0, SHARED_DATA), plus=False, workers=workers)
    d.setup()
    gold = d.scripted_agent("gold")
    d.run(gold)  # warm-up: the canonical outputs, computed once in the sandbox and cached
    t0, c0 = time.perf_counter(), _cpu_s()
    res = d.run(gold)
    out = {"seconds": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0, "samples": len(res.samples),
           "passed": sum(s.score == 1 for s in res.samples)}
    d.close()
    return out


def evalplus(workers: int) -> dict:
    os.environ["MBPP_OVERRIDE_PATH"] = str(DATA)  # read when evalplus is imported
    from evalplus.evaluate import evaluate  # optional: the test extra installs it

    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    text = "\n".join(json.dumps({"task_id": r["task_id"], "solution": r["canonical_solution"]}) for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        def run(tag: str) -> dict:
            samples = Path(tmp) / f"samples_{tag}.jsonl"  # a fresh file: EvalPlus asks before overwriting
            samples.write_text(text)
            with contextlib.redirect_stdout(sys.stderr):  # its report; our JSON line is the only stdout
                evaluate(dataset="mbpp", samples=str(samples), base_only=True, parallel=workers, i_just_wanna_run=True)
            return json.loads(Path(str(samples).replace(".jsonl", "_eval_results.json")).read_text())

        run("warmup")  # warm-up: EvalPlus computes its ground truth once and caches it (~/.cache/evalplus)
        t0, c0 = time.perf_counter(), _cpu_s()
        res = run("timed")
        seconds, cpu = time.perf_counter() - t0, _cpu_s() - c0
    passed = sum(e[0]["base_status"] == "pass" for e in res["eval"].values())
    return {"seconds": seconds, "cpu_s": cpu, "samples": len(rows), "passed": passed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("side", choices=["ours", "evalplus"])
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    out = (ours if a.side == "ours" else evalplus)(a.workers)
    print(json.dumps({"side": a.side, **out}))


if __name__ == "__main__":
    main()
