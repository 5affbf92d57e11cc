"""Executors run evaluation jobs: inline, in worker processes (one per slot, optionally one per GPU), or on
Ray actors (a local Ray or a cluster).

All expose ``submit(model_id, lineage, split, gates=None) -> Future``; the runner tells results in job
order, so every executor gives the archives of the inline run with the same seed and worker count.

Workers die (an OOM kill, a segfault in a native library, a preempted node). A job whose worker died is
handed out again, to a fresh worker, up to ``MAX_ATTEMPTS`` times; a job that keeps killing its worker
comes back *rejected* with the reason (a model must not be able to stop a run), never as a crash.

Slots: ``process`` runs ``runner.workers`` slots with the parent's environment; ``gpu`` runs one slot per
``runner.gpus_per_worker`` GPUs (``runner.gpus``, or every visible one), each worker started with
``CUDA_VISIBLE_DEVICES`` set to its own, so an engine built on ``cuda`` lands on its GPU and is built once
per worker (weights are swapped in place per job). ``ray`` runs one actor per slot with
``num_gpus = runner.gpus_per_worker``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable, Mapping

import torch

from harness.errors import ConfigError
from harness.runner.ray_executor import RayExecutor
from harness.runner.retry import relay
from harness.runner.worker import Evaluator


class Executor:
    def submit(self, model_id: str, lineage: Mapping, split: str, gates=None) -> Future:
        """Evaluate a model; ``gates`` (racing) are the archives it will be offered to (harness/qd/racing.py)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class InlineExecutor(Executor):
    """Evaluates at submit time in this process (one worker; the reference for exact resume)."""

    def __init__(self, cfg_dict: Mapping, run_dir: Path):
        self.evaluator = Evaluator(cfg_dict, run_dir)

    def submit(self, model_id, lineage, split, gates=None) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(self.evaluator.evaluate(model_id, lineage, split, gates))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future  # surfaced by fut.result() in the runner
            fut.set_exception(exc)
        return fut

    def close(self) -> None:
        self.evaluator.close()


_WORKER: Evaluator | None = None


def _init_worker(cfg_dict, run_dir, env) -> None:
    global _WORKER
    os.environ.update(env)  # before anything initialises CUDA in this process
    _WORKER = Evaluator(cfg_dict, run_dir)


def _run_in_worker(model_id, lineage, split, gates) -> dict:
    assert _WORKER is not None
    return _WORKER.evaluate(model_id, lineage, split, gates)


def worker_environment() -> dict:
    """What a worker sees of the variables the executors set (tests and ``cycleqd doctor``)."""
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


class _Slot:
    """One worker process (a one-process pool, rebuilt when its process dies) and the jobs it holds."""

    def __init__(self, index: int, env: dict, start: Callable[[dict], ProcessPoolExecutor]):
        self.index, self.env, self._start = index, env, start
        self.pool = start(env)
        self.busy = 0
        self.generation = 0  # bumped on every rebuild, so one death rebuilds once

    def restart(self, seen_generation: int) -> None:
        if self.generation == seen_generation:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._start(self.env)
            self.generation += 1


class ProcessExecutor(Executor):
    """One spawned process per slot, each with its own Evaluator (store + domains + engine) built once.

    A job goes to the slot with the fewest jobs in flight (ties: the lowest index); if its process dies the
    slot starts a fresh one and the job is handed out again (module docstring)."""

    def __init__(self, cfg_dict: Mapping, run_dir: Path, envs: list[dict]):
        ctx = mp.get_context("spawn")
        cfg, rd = dict(cfg_dict), str(run_dir)

        def start(env: dict) -> ProcessPoolExecutor:
            return ProcessPoolExecutor(1, mp_context=ctx, initializer=_init_worker, initargs=(cfg, rd, env))

        self.slots = [_Slot(i, env, start) for i, env in enumerate(envs)]
        self._lock = threading.Lock()

    def submit(self, model_id, lineage, split, gates=None) -> Future:
        out: Future = Future()
        args = (model_id, dict(lineage), split, gates)
        self._dispatch(out, args, attempt=1)
        return out

    def _dispatch(self, out: Future, args: tuple, attempt: int) -> None:
        with self._lock:
            slot = min(self.slots, key=lambda s: (s.busy, s.index))
            slot.busy += 1
            gen = slot.generation
            try:
                inner = slot.pool.submit(_run_in_worker, *args)
            except BrokenProcessPool:
                slot.restart(gen)
                gen = slot.generation
                inner = slot.pool.submit(_run_in_worker, *args)

        def done(f: Future) -> None:
            with self._lock:
                slot.busy -= 1
                dead = isinstance(f.exception(), BrokenProcessPool)
                if dead:
                    slot.restart(gen)
            relay(out, f, attempt=attempt, job=args[0], again=lambda a: self._dispatch(out, args, a),
                  died_of=f"worker {slot.index} died" if dead else None)

        inner.add_done_callback(done)

    def close(self) -> None:
        for s in self.slots:
            s.pool.shutdown(wait=True, cancel_futures=True)


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(runner: Mapping) -> list[dict]:
    """One environment per worker: ``gpus_per_worker`` GPUs each (``runner.gpus`` or every visible one)."""
    gpus = [str(g) for g in runner.get("gpus") or visible_gpus()]
    per = int(runner.get("gpus_per_worker") or 1)
    if not gpus:
        raise ConfigError("runner.executor=gpu: no GPU visible (CUDA_VISIBLE_DEVICES / torch.cuda); use "
                          "executor=process, or list runner.gpus")
    if len(gpus) < per:
        raise ConfigError(f"runner.gpus_per_worker: {per} but only {len(gpus)} GPU(s): {gpus}")
    return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[i:i + per])} for i in range(0, len(gpus) - per + 1, per)]


def make_executor(cfg_dict: Mapping, run_dir: Path) -> Executor:
    runner = cfg_dict["runner"]
    kind = runner["executor"]
    if kind == "process":
        return ProcessExecutor(cfg_dict, run_dir, [{} for _ in range(int(runner["workers"]))])
    if kind == "gpu":
        return ProcessExecutor(cfg_dict, run_dir, gpu_slots(runner))
    if kind == "ray":
        return RayExecutor(cfg_dict, run_dir)
    return InlineExecutor(cfg_dict, run_dir)
