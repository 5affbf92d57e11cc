"""A run SIGKILLed at several moments and resumed ends with exactly the uninterrupted run's archives."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from harness.runner.checkpoint import read_json
from tests.conftest import REPO, VECTOR_WORLD

OVERRIDES = ["qd.generations=150", "runner.progress=false"]


def cli(*args):
    return [sys.executable, "-m", "harness.cli", *args]


def told(run_dir):
    try:
        return read_json(run_dir / "checkpoint.json")["qd"]["told"]
    except (FileNotFoundError, json.JSONDecodeError):
        return -1


def start(args):
    return subprocess.Popen(cli(*args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_when(proc, run_dir, predicate, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False  # finished before the kill point
        if predicate(run_dir):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    pytest.fail("kill point never reached")


def comparable(run_dir):
    ck = read_json(run_dir / "checkpoint.json")
    res = read_json(run_dir / "results.json")
    return ck["qd"]["archives"], ck["qd"]["rng"], res["final_model_id"], res["rows"]


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_matches_uninterrupted(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(cli("run", str(VECTOR_WORLD), *OVERRIDES, "--run-dir", str(ref)), cwd=REPO, check=True,
                   capture_output=True)
    run = tmp_path / "killed"
    kills = 0
    # 1: right after seeding; 2: mid-run on a checkpoint count; 3-5: at random moments after start-up
    proc = start(["run", str(VECTOR_WORLD), *OVERRIDES, "--run-dir", str(run)])
    kills += kill_when(proc, run, lambda d: told(d) >= 1)
    proc = start(["resume", str(run)])
    kills += kill_when(proc, run, lambda d: told(d) >= 40)
    rnd = random.Random(0)
    for _ in range(3):
        before = told(run)
        delay = rnd.uniform(0.0, 0.15)
        proc = start(["resume", str(run)])
        state = {"t": None}

        def moved(d, before=before, delay=delay, state=state):
            if told(d) > before and state["t"] is None:
                state["t"] = time.time()
            return state["t"] is not None and time.time() - state["t"] >= delay

        kills += kill_when(proc, run, moved)
    proc = start(["resume", str(run)])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert kills >= 3
    assert comparable(run) == comparable(ref)


def test_resume_without_checkpoint_says_so(tmp_path):
    out = subprocess.run(cli("resume", str(tmp_path)), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "nothing to resume" in out.stderr and "Traceback" not in out.stderr
