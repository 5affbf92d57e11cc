"""Executors run evaluation jobs: inline (in this process) or in a pool of worker processes.

Both expose ``submit(model_id, lineage, split, gates=None) -> Future``; the runner never knows which one it has, so a
Ray executor (one GPU per actor) drops in behind the same two methods.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Mapping

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


def _init_worker(cfg_dict, run_dir) -> None:
    global _WORKER
    _WORKER = Evaluator(cfg_dict, run_dir)


def _run_in_worker(model_id, lineage, split, gates) -> dict:
    assert _WORKER is not None
    return _WORKER.evaluate(model_id, lineage, split, gates)


class ProcessExecutor(Executor):
    """A pool of spawned processes, each with its own Evaluator (store + domains) built once."""

    def __init__(self, cfg_dict: Mapping, run_dir: Path, workers: int):
        ctx = mp.get_context("spawn")
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                        initargs=(dict(cfg_dict), str(run_dir)))

    def submit(self, model_id, lineage, split, gates=None) -> Future:
        return self.pool.submit(_run_in_worker, model_id, dict(lineage), split, gates)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def make_executor(cfg_dict: Mapping, run_dir: Path) -> Executor:
    runner = cfg_dict["runner"]
    if runner["executor"] == "process":
        return ProcessExecutor(cfg_dict, run_dir, int(runner["workers"]))
    return InlineExecutor(cfg_dict, run_dir)
