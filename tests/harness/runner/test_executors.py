"""Executors: a worker that dies mid-job is replaced and the job handed out again (same archives as the
inline run); a job that keeps killing workers is rejected, not fatal; GPU slots get their own devices."""

import os

import pytest
from omegaconf import OmegaConf

from harness.config import load_config
from harness.errors import ConfigError
from harness.runner.checkpoint import read_json
from harness.runner.executors import ProcessExecutor, gpu_slots, worker_environment
from harness.runner.runner import run_from_config
from harness.runner.worker import make_store
from harness.store.recipes import expert_id
from tests.conftest import VECTOR_WORLD

CRASH = "tests.harness.runner.crash_domain:CrashingVectorWorld"
QUICK = ["qd.generations=8", "runner.progress=false", "runner.final_rows=final"]


def crashing(flag, times):
    return [f"tasks.1.domain={CRASH}", f"tasks.1.params.crash_flag={flag}", f"tasks.1.params.crash_times={times}",
            f"tasks.1.params.parent_pid={os.getpid()}"]


def archives(run_dir):
    return read_json(run_dir / "checkpoint.json")["qd"]["archives"]


def test_a_dead_process_worker_is_replaced_and_the_run_equals_the_inline_one(tmp_path):
    flag = tmp_path / "crashes"
    ref, _ = run_from_config(VECTOR_WORLD, QUICK + crashing(flag, 0) + ["runner.workers=2"], run_dir=tmp_path / "ref")
    run, _ = run_from_config(VECTOR_WORLD, QUICK + crashing(flag, 2) + ["runner.executor=process", "runner.workers=2"],
                             run_dir=tmp_path / "run")
    assert len(flag.read_text().splitlines()) == 2  # two workers really died
    assert archives(run) == archives(ref)
    hist = read_json(run / "checkpoint.json")["qd"]["history"]
    assert all(h.get("error") is None for h in hist)


def test_a_job_that_always_kills_its_worker_is_rejected_not_fatal(tmp_path):
    flag = tmp_path / "crashes"
    cfg = load_config(VECTOR_WORLD, crashing(flag, 10 ** 6))
    store = make_store(cfg, tmp_path / "r")
    ex = ProcessExecutor(OmegaConf.to_container(cfg, resolve=True), tmp_path / "r", [{}])
    try:
        res = ex.submit(expert_id("task0"), store.lineage(expert_id("task0")), "opt").result(timeout=300)
    finally:
        ex.close()
    assert res["scores"] is None and res["error"].startswith("rejected: its worker died 3 times")
    assert len(flag.read_text().splitlines()) == 3


def test_gpu_slots_give_each_worker_its_own_devices():
    assert gpu_slots({"gpus": ["0", "1", "2", "3"], "gpus_per_worker": 2}) == [
        {"CUDA_VISIBLE_DEVICES": "0,1"}, {"CUDA_VISIBLE_DEVICES": "2,3"}]
    assert gpu_slots({"gpus": [0, 1, 2], "gpus_per_worker": 1})[2] == {"CUDA_VISIBLE_DEVICES": "2"}
    with pytest.raises(ConfigError, match="gpus_per_worker: 2 but only 1"):
        gpu_slots({"gpus": ["0"], "gpus_per_worker": 2})


def test_gpu_workers_see_their_devices(tmp_path):
    c = OmegaConf.to_container(load_config(VECTOR_WORLD), resolve=True)
    ex = ProcessExecutor(c, tmp_path, gpu_slots({"gpus": ["5", "7"], "gpus_per_worker": 1}))
    try:
        envs = [s.pool.submit(worker_environment).result(timeout=120) for s in ex.slots]
    finally:
        ex.close()
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["5", "7"] and envs[0]["pid"] != envs[1]["pid"]


def test_gpu_executor_without_gpus_says_so(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="runner.executor=gpu: no GPU visible"):
        gpu_slots({"gpus": [], "gpus_per_worker": 1})


def test_ray_run_equals_inline_and_survives_an_actor_dying(tmp_path):
    pytest.importorskip("ray")
    flag = tmp_path / "crashes"
    ref, _ = run_from_config(VECTOR_WORLD, QUICK + crashing(flag, 0) + ["runner.workers=2"], run_dir=tmp_path / "ref")
    run, _ = run_from_config(VECTOR_WORLD, QUICK + crashing(flag, 1) + ["runner.executor=ray", "runner.workers=2"],
                             run_dir=tmp_path / "ray")
    assert len(flag.read_text().splitlines()) == 1
    assert archives(run) == archives(ref)
