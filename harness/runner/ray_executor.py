"""The Ray executor (``runner.executor: ray``): one actor per worker, each holding an Evaluator built once.

``runner.ray_address`` names a cluster (``auto``, ``ray://host:10001``); unset, a local Ray starts in this
process with the machine's CPUs. Each actor asks for ``runner.gpus_per_worker`` GPUs (0 on a CPU machine),
so Ray places one actor per GPU and sets its CUDA_VISIBLE_DEVICES. Results are told in job order by the
runner, so a Ray run equals the inline run with the same seed and worker count. An actor that dies
mid-job (node lost, OOM, ``ray.kill``) is replaced and the job handed out again, up to
``retry.MAX_ATTEMPTS`` times (then the job is rejected with the reason, as in the process executor).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Mapping

from harness.errors import ConfigError
from harness.runner.retry import relay
from harness.runner.worker import Evaluator

log = logging.getLogger("cycleqd")


class _EvaluatorActor:
    """The body of a Ray actor (wrapped by ``ray.remote`` at start: Ray is an optional dependency)."""

    def __init__(self, cfg_dict: Mapping, run_dir: str):
        self.evaluator = Evaluator(cfg_dict, run_dir)

    def evaluate(self, model_id, lineage, split, gates):
        return self.evaluator.evaluate(model_id, lineage, split, gates)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    def __init__(self, cfg_dict: Mapping, run_dir: Path):
        try:
            import ray  # optional: the 'ray' extra
        except ImportError:
            raise ConfigError("runner.executor=ray: Ray is not installed (pip install -e '.[ray]')") from None
        self.ray = ray
        runner = cfg_dict["runner"]
        if not ray.is_initialized():
            address = runner.get("ray_address")
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     **({} if address else {"num_cpus": max(1, int(runner["workers"]))}))
            self._owns_ray = True
        else:
            self._owns_ray = False
        gpus = float(runner.get("gpus_per_worker") or 0)
        if gpus and not ray.cluster_resources().get("GPU"):
            log.warning("runner.executor=ray: the cluster has no GPU; actors run on CPU")
            gpus = 0.0
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus)(_EvaluatorActor)
        self._args = (dict(cfg_dict), str(run_dir))
        self.actors = [self._remote.remote(*self._args) for _ in range(int(runner["workers"]))]
        self.busy = [0] * len(self.actors)
        self._lock = threading.Lock()

    def submit(self, model_id, lineage, split, gates=None) -> Future:
        out: Future = Future()
        self._dispatch(out, (model_id, dict(lineage), split, gates), attempt=1)
        return out

    def _dispatch(self, out: Future, args: tuple, attempt: int) -> None:
        with self._lock:
            i = min(range(len(self.actors)), key=lambda k: (self.busy[k], k))
            self.busy[i] += 1
            actor = self.actors[i]
        inner = actor.evaluate.remote(*args).future()

        def done(f: Future) -> None:
            dead = isinstance(f.exception(), self.ray.exceptions.RayActorError)
            with self._lock:
                self.busy[i] -= 1
                if dead and self.actors[i] is actor:  # one replacement per death
                    self.actors[i] = self._remote.remote(*self._args)
            relay(out, f, attempt=attempt, job=args[0], again=lambda a: self._dispatch(out, args, a),
                  died_of=f"Ray actor {i} died" if dead else None)

        inner.add_done_callback(done)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self._owns_ray:
            self.ray.shutdown()
