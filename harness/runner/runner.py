"""The run loop: ask jobs, evaluate them through an executor, tell results, checkpoint every generation.

Steady state with ``runner.workers`` jobs in flight. Results are told in job order (a finished job waits
for older ones), so the archive sequence depends only on the config and seed, never on timing: the same
config gives the same archive with 1 worker or with N (for a given N), and a resumed run continues
exactly. After each tell the checkpoint (archives, RNG state, counters, jobs in flight, recipes) is
replaced atomically; on resume the jobs that were in flight are submitted again.
"""

from __future__ import annotations

import logging
import platform
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from harness.config import default_run_dir, load_config, to_yaml
from harness.errors import ConfigError
from harness.qd.cycle import CycleQD, Job, QDSettings
from harness.registry import MERGE_METHODS, RUN_REPORTS
from harness.runner.checkpoint import (
    RunLock,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    remove_stale_temporaries,
)
from harness.runner.cost_estimate import estimate_child_cost
from harness.runner.executors import make_executor
from harness.runner.validation import SEARCH, VALIDATION, finalists
from harness.runner.worker import make_store
from harness.store.recipes import BASE_ID, MergeRecipe, expert_id

log = logging.getLogger("cycleqd")

CHECKPOINT = "checkpoint.json"
CONFIG = "config.yaml"
RESULTS = "results.json"
FORMAT_VERSION = 3  # 2: typed, versioned recipes; 3: a child's task vector is its stored weights minus the base


def qd_settings(cfg: DictConfig, experts: list[str]) -> QDSettings:
    q = cfg.qd
    return QDSettings(
        tasks=[t.name for t in cfg.tasks], experts=experts, generations=int(q.generations), bins=int(q.bins),
        bounds={k: tuple(v) for k, v in q.bounds.items()}, bounds_scale=tuple(q.bounds_scale),
        sampler=q.sampler, crossover_mu=q.crossover_mu, crossover_sigma=q.crossover_sigma,
        mutation=q.mutation, mutation_w_max=q.mutation_w_max, mutation_sigma=q.mutation_sigma,
        flip_interval=int(q.flip_interval), mode=q.mode, aggregation_temperature=q.aggregation_temperature,
        seed=int(cfg.seed),
    )


def environment_record() -> dict:
    rec = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
           "numpy": numpy.__version__, "torch_threads": torch.get_num_threads()}
    try:
        rec["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001 - informational only
        rec["commit"] = None
    return rec


class Runner:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.store = make_store(cfg, self.run_dir)
        self.expert_names = sorted(self.store.expert_dirs)
        self.qd = CycleQD(qd_settings(cfg, [expert_id(e) for e in self.expert_names]), self.store.add)
        self.pending: "OrderedDict[int, Job]" = OrderedDict()
        self._val_scores: dict[str, dict | None] = {}

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def create(cls, cfg: DictConfig, run_dir: Path | None = None, overwrite: bool = False) -> "Runner":
        run_dir = Path(run_dir) if run_dir else default_run_dir(cfg)
        if (run_dir / CHECKPOINT).exists() and not overwrite:
            raise ConfigError(f"run_dir: {run_dir} already holds a run; use `cycleqd resume {run_dir}`")
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        try:
            remove_stale_temporaries(run_dir)
            atomic_write_bytes(run_dir / CONFIG, to_yaml(cfg).encode())
            atomic_write_json(run_dir / "environment.json", environment_record(), indent=1)
            runner = cls(cfg, run_dir)
            runner._lock = lock
            runner.checkpoint()
        except BaseException:
            lock.release()
            raise
        return runner

    @classmethod
    def resume(cls, run_dir: Path) -> "Runner":
        run_dir = Path(run_dir)
        if not (run_dir / CHECKPOINT).exists():
            raise ConfigError(f"run_dir: {run_dir} has no {CHECKPOINT}; nothing to resume")
        lock = RunLock(run_dir).acquire()
        try:
            remove_stale_temporaries(run_dir)
            cfg = load_config(run_dir / CONFIG)
            runner = cls(cfg, run_dir)
            runner._lock = lock
            st = read_json(run_dir / CHECKPOINT)
            if st.get("version") != FORMAT_VERSION:
                raise ConfigError(f"{run_dir / CHECKPOINT}: format version {st.get('version')} is not {FORMAT_VERSION}")
            runner.store.register(st["recipes"])
            runner.qd.load_state(st["qd"])
            for jd in st["pending"]:
                job = Job.from_dict(jd)
                runner.pending[job.job_id] = job
        except BaseException:
            lock.release()
            raise
        return runner

    def close(self) -> None:
        """Release the run directory (``run`` does it when it returns or fails)."""
        lock = getattr(self, "_lock", None)
        if lock is not None:
            lock.release()

    # -- state --------------------------------------------------------------------------------------
    def checkpoint(self) -> None:
        self.store.evict(self.pinned(), protect=self.in_flight())
        atomic_write_json(self.run_dir / CHECKPOINT, {
            "version": FORMAT_VERSION,
            "qd": self.qd.state(),
            "pending": [j.to_dict() for j in self.pending.values()],
            "recipes": self.store.merge_recipes(),
        })

    def in_flight(self) -> set[str]:
        """The jobs in flight and their parents: files a worker may be reading right now."""
        out: set[str] = set()
        for job in self.pending.values():
            out.add(job.model_id)
            out.update(job.parents)
        return out

    def pinned(self) -> set[str]:
        """Models whose files the store keeps: the archives' elites (future parents) and the jobs in flight
        with their parents."""
        return {e.model_id for a in self.qd.archives.values() for e in a.elites()} | self.in_flight()

    def snapshot(self, generation: int) -> None:
        atomic_write_json(self.run_dir / "snapshots" / f"gen_{generation:06d}.json", {
            "generation": generation,
            "archives": {t: a.to_dict() for t, a in self.qd.archives.items()},
        })

    def announce_cost(self) -> None:
        """Log (and keep in ``cost_estimate.json``) what one child's merge and mutation should cost for this
        model on this device, before the first generation (``harness/runner/cost_estimate.py``)."""
        try:
            est = estimate_child_cost(self.store.base_dir, str(self.cfg.qd.mutation), self.store.device,
                                      w_max=self.cfg.qd.get("mutation_w_max"))
        except Exception as exc:  # noqa: BLE001 - an estimate must never stop a run; say why it is missing
            log.warning("cost estimate unavailable: %s", exc)
            return
        log.info(est.line())
        atomic_write_json(self.run_dir / "cost_estimate.json", est.to_dict())

    # -- loop ---------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg_dict = OmegaConf.to_container(self.cfg, resolve=True)
        self.announce_cost()
        executor = make_executor(cfg_dict, self.run_dir)
        split = self.search_split
        futures = {}
        bar = self._progress_bar()
        try:
            for job in self.pending.values():  # jobs in flight when the last run stopped
                futures[job.job_id] = self._submit(executor, job, split)
            while True:
                while len(self.pending) < int(self.cfg.runner.workers):
                    job = self.qd.ask()
                    if job is None:
                        break
                    self.pending[job.job_id] = job
                    futures[job.job_id] = self._submit(executor, job, split)
                if not self.pending:
                    break
                job_id, job = next(iter(self.pending.items()))
                result = futures.pop(job_id).result()
                del self.pending[job_id]
                self.qd.tell(job, result["scores"], result["error"])
                if result.get("cached"):
                    self.qd.history[-1]["cached"] = True
                if job.kind == "child":
                    self.qd.history[-1]["timings"] = result["timings"]
                    if "samples" in result:
                        self.qd.history[-1]["samples"] = result["samples"]
                    if result.get("raced") is not None:
                        self.qd.history[-1]["raced"] = result["raced"]
                    if job.generation % int(self.cfg.runner.snapshot_every) == 0 or self.qd.done:
                        self.snapshot(job.generation)
                    every = int(self.cfg.runner.progress_every)
                    if every and (job.generation % every == 0 or self.qd.done):
                        self.progress_point(executor, job.generation)
                elif self.qd.seeded and not self.qd.generation:
                    self.snapshot(0)
                self.checkpoint()
                self._update_bar(bar, job)
            if bar is not None:
                bar.close()
            results = self.final_evaluation(executor)
        finally:
            executor.close()
            self.close()
        return results

    @property
    def search_split(self) -> str:
        """What the search optimises on: the optimisation split, less its validation slice if one is held out."""
        return SEARCH if self.cfg.runner.validation_fraction > 0 else self.cfg.runner.opt_split

    def finalists(self, executor) -> tuple[dict | None, dict | None]:
        """The elites of the final merge: each archive's best (the paper), or with a validation slice the
        best on it of each archive's ``validation_top_k`` best (harness/runner/validation.py)."""
        if not self.cfg.runner.validation_fraction > 0:
            return None, None
        def val_scores(mid: str):
            if mid not in self._val_scores:  # an elite stays an elite: progress points re-ask the same ones
                self._val_scores[mid] = executor.submit(mid, self.store.lineage(mid), VALIDATION).result()["scores"]
            return self._val_scores[mid]

        return finalists(self.qd.archives, int(self.cfg.runner.validation_top_k), val_scores)

    def aggregate_recipe(self, executor) -> tuple[MergeRecipe, dict]:
        chosen, record = self.finalists(executor)
        recipe, info = self.qd.aggregate_recipe(chosen)
        if record is not None:
            for t in info:
                info[t]["validation"] = record[t]
        return recipe, info

    def _submit(self, executor, job: Job, split: str):
        """Hand ``job`` to the executor; with racing, a child carries the gates of the archives it will meet.
        Archives only improve, so gates taken now (or again on resume) are safe until the job is told."""
        race = self.cfg.runner.race and self.cfg.runner.race_chunk and job.kind == "child"
        return executor.submit(job.model_id, self.store.lineage(job.model_id), split,
                               self.qd.gates(job) if race else None)

    def progress_point(self, executor, generation: int) -> None:
        """Score the model CycleQD would return now on the test split; appended to progress.json before
        the checkpoint, so a run killed in between recomputes it on resume (same model, same score)."""
        path = self.run_dir / "progress.json"
        points = [p for p in (read_json(path) if path.exists() else []) if p["generation"] < generation]
        recipe, _ = self.aggregate_recipe(executor)
        mid = self.store.add(recipe)
        res = executor.submit(mid, self.store.lineage(mid), self.cfg.runner.test_split).result()
        scores = res["scores"]
        points.append({"generation": generation, "model_id": mid, "split": self.cfg.runner.test_split,
                       "scores": scores, "avg": None if scores is None else sum(scores.values()) / len(scores)})
        atomic_write_json(path, points, indent=1)

    # -- final model and leaderboard ----------------------------------------------------------------
    def final_evaluation(self, executor) -> dict:
        """Score base, experts, each archive's best elite and the aggregated model on both splits."""
        recipe, info = self.aggregate_recipe(executor)
        final_id = self.store.add(recipe)
        self.checkpoint()  # the final recipe is part of the store index from now on
        rows = []
        if self.cfg.runner.final_rows == "all":
            rows = [("base", BASE_ID)] + [(f"expert:{e}", expert_id(e)) for e in self.expert_names]
            mean_id = self.store.add(MergeRecipe(tuple(expert_id(e) for e in self.expert_names),
                                                 MERGE_METHODS.get("mean").spec()))
            rows += [("mean_merge", mean_id)]
            rows += [(f"best:{t}", info[t]["model"]) for t in self.qd.archives]
        rows += [("cycleqd", final_id)]
        splits = [self.cfg.runner.opt_split, self.cfg.runner.test_split]
        table = []
        for label, mid in rows:
            entry = {"model": label, "model_id": mid}
            for sp in splits:
                res = executor.submit(mid, self.store.lineage(mid), sp).result()
                if res["scores"] is None:
                    entry[sp] = None
                    entry[f"{sp}_error"] = res["error"]
                else:
                    entry[sp] = dict(res["scores"], avg=sum(res["scores"].values()) / len(res["scores"]))
                    if res.get("verdicts"):  # per instance, for paired comparisons (leaderboards/paired.py)
                        entry.setdefault("verdicts", {})[sp] = res["verdicts"]
            table.append(entry)
        results = {"tasks": [t.name for t in self.cfg.tasks], "splits": splits, "rows": table,
                   "aggregation": info, "final_model_id": final_id,
                   "archives": {t: a.to_dict()["stats"] for t, a in self.qd.archives.items()},
                   "generations": self.qd.generation}
        atomic_write_json(self.run_dir / RESULTS, results, indent=1)
        self.store.export(final_id, self.run_dir / "final_model")
        self.store.discard_files()  # the run is over: its models are recipes again (and the export)
        RUN_REPORTS.get("files")(self.run_dir)  # tables, elite maps, plots (leaderboards/, by name)
        return results

    # -- progress -----------------------------------------------------------------------------------
    def _progress_bar(self):
        if not self.cfg.runner.progress:
            return None
        return tqdm(total=int(self.cfg.qd.generations), initial=self.qd.told, desc="CycleQD", unit="gen",
                    dynamic_ncols=True, file=sys.stderr)

    def _update_bar(self, bar, job: Job) -> None:
        if bar is None or job.kind != "child":
            return
        bar.update(1)
        best = {t: f"{a.stats.obj_max:.2f}" for t, a in self.qd.archives.items()}
        cov = {t: f"{a.stats.coverage:.0%}" for t, a in self.qd.archives.items()}
        bar.set_postfix_str(f"active={job.active_task} best={best} cov={cov}", refresh=False)


def run_from_config(path, overrides=None, run_dir=None, overwrite=False) -> tuple[Path, dict]:
    cfg = load_config(path, overrides)
    runner = Runner.create(cfg, run_dir, overwrite=overwrite)
    return runner.run_dir, runner.run()


def resume_run(run_dir) -> dict:
    return Runner.resume(Path(run_dir)).run()
