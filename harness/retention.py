"""Language retention (the paper's Table 3) through lm-eval, scored on the engine's in-memory model.

CycleQD's claim is that merging keeps the base's general language skills while adding the experts' agent
skills; the paper measures it with general benchmarks run by an evaluation harness. Here that harness is
lm-eval (``pip install '.[lmeval]'``): its HF wrapper (``HFLM``) is handed the *live* model object of an HF
engine (``harness.engines.hf.HFEngine``), so a child's weights are swapped in with ``load_state_dict`` and
scored without ever writing a copy to disk, the same way the agent tasks score it.

Tasks are lm-eval task names or YAML files found through ``include_path`` (a folder of task YAMLs: the
mini world's tasks are written there at run time from data we make; ``dataset_path: json`` with absolute
``data_files`` keeps them local). By default everything runs offline: ``HF_HUB_OFFLINE`` and
``HF_DATASETS_OFFLINE`` are set before ``lm_eval`` (and with it ``datasets``) is imported, so a task whose
data is not local fails instead of reaching the network. The paper's tasks download their datasets from
the hub: ask for them with ``offline=False`` on a machine with network access.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch

from harness.engines import get_engine
from harness.errors import ConfigError, HarnessError

log = logging.getLogger(__name__)

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def go_offline() -> None:
    """Set the hub / datasets offline flags. ``datasets`` and ``huggingface_hub`` read them once, at
    import, so they must be set before ``lm_eval`` is imported; if those modules are already loaded their
    cached flags are switched too (otherwise ``datasets`` would still try the network)."""
    for var in OFFLINE_VARS:
        os.environ[var] = "1"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:
        hub.HF_HUB_OFFLINE = True
    ds = sys.modules.get("datasets.config")
    if ds is not None:
        ds.HF_HUB_OFFLINE = True
        ds.HF_DATASETS_OFFLINE = True


def is_offline() -> bool:
    """Whether the environment forbids the hub (either flag set to a true value)."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in OFFLINE_VARS)


def _lm_eval():
    """The ``lm_eval`` package, or a one-line error saying how to install it."""
    try:
        import lm_eval  # optional: the 'lmeval' extra
        from lm_eval.models.huggingface import HFLM  # optional: the 'lmeval' extra
        from lm_eval.tasks import TaskManager  # optional: the 'lmeval' extra
    except ImportError as exc:
        raise ConfigError(f"retention: lm-eval is not installed ({exc.name or exc}): pip install -e '.[lmeval]'") from None
    return lm_eval, HFLM, TaskManager


@contextlib.contextmanager
def _rng_preserved() -> Iterator[None]:
    """lm-eval seeds Python's, NumPy's and torch's global generators; a run that scores retention between
    generations must draw the same numbers afterwards as without it."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None  # torch.manual_seed seeds these too
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def metrics_of(results: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's per-task result row as {metric: value}: ``acc,none`` becomes ``acc``, a filtered metric
    keeps its filter (``exact_match,strict-match``); standard errors and non-numbers are dropped."""
    out: dict[str, float] = {}
    for key, value in results.items():
        metric, _, filt = key.partition(",")
        if not filt or metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[metric if filt == "none" else key] = float(value)
    return out


def evaluate(model, tokenizer, tasks: Sequence[str], *, include_path: str | Path | Sequence[str | Path] | None = None,
             include_defaults: bool | None = None, num_fewshot: Mapping[str, int | None] | None = None,
             offline: bool = True, batch_size: int = 8, limit: int | float | None = None,
             max_length: int | None = None, unsafe_code: bool = False) -> dict[str, dict[str, float]]:
    """Run lm-eval ``tasks`` on ``model`` (a loaded ``transformers`` causal LM, used as is: whatever weights
    it holds now are scored) and return {task or group: {metric: value}}.

    ``include_path``: folder(s) of task YAMLs; ``include_defaults``: also index lm-eval's built-in tasks
    (default: only when no ``include_path`` is given; indexing them costs seconds); ``num_fewshot``: per task
    (None: the task's own default); ``limit``: documents per task; ``unsafe_code``: allow tasks that execute
    model-written code (HumanEval+). ``offline`` sets the hub flags before lm-eval is imported.
    """
    if offline:
        go_offline()
    lm_eval, HFLM, TaskManager = _lm_eval()
    paths = [] if include_path is None else [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
    for p in paths:
        if not Path(p).is_dir():
            raise ConfigError(f"retention: include_path {p} is not a directory of task YAMLs")
    manager = TaskManager(include_path=[str(p) for p in paths] or None,
                          include_defaults=(not paths) if include_defaults is None else include_defaults)
    known = set(manager.all_tasks)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        where = f" in {', '.join(map(str, paths))}" if paths else ""
        raise ConfigError(f"retention: unknown lm-eval task {unknown[0]!r}{where}")
    if unsafe_code:
        os.environ.setdefault("HF_ALLOW_CODE_EVAL", "1")  # the code-execution metric refuses to run without it
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
    by_shots: dict[int | None, list[str]] = {}
    for t in tasks:
        by_shots.setdefault((num_fewshot or {}).get(t), []).append(t)
    out: dict[str, dict[str, float]] = {}
    for shots, names in by_shots.items():  # lm-eval takes one few-shot count per call
        t0 = time.perf_counter()
        with _rng_preserved(), torch.no_grad():
            try:
                res = lm_eval.simple_evaluate(model=lm, tasks=names, num_fewshot=shots, limit=limit,
                                              task_manager=manager, bootstrap_iters=0, log_samples=False,
                                              verbosity="ERROR", confirm_run_unsafe_code=unsafe_code)
            except (OSError, ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                hint = " (offline: is its dataset local?)" if is_offline() else ""
                raise HarnessError(f"retention: lm-eval failed on {names}{hint}: {type(exc).__name__}: {first}") from None
        for name, row in res["results"].items():
            out[name] = metrics_of(row)
        log.info("retention: %s scored in %.1f s", ", ".join(names), time.perf_counter() - t0)
    return out


def evaluate_engine(engine, tasks: Sequence[str], **kw) -> dict[str, dict[str, float]]:
    """``evaluate`` on an engine's in-memory model (an HF engine: it holds ``model`` and ``tok``); load a
    child first with ``engine.load_state_dict``."""
    model, tok = getattr(engine, "model", None), getattr(engine, "tok", None)
    if model is None or tok is None or not isinstance(model, torch.nn.Module):
        raise ConfigError(f"retention: engine {type(engine).__name__} holds no in-memory transformers model "
                          f"(lm-eval's HF wrapper needs engine.kind=hf)")
    return evaluate(model, tok, tasks, **kw)


def evaluate_weights(engine_cfg: Mapping, state_dict: Mapping, tasks: Sequence[str], **kw) -> dict[str, dict[str, float]]:
    """Swap ``state_dict`` into this process's engine for ``engine_cfg`` (built once: ``get_engine``) and
    score it with ``evaluate``: how a run or a leaderboard scores a child's retention without a saved copy."""
    engine = get_engine(dict(engine_cfg))
    engine.load_state_dict(state_dict)
    return evaluate_engine(engine, tasks, **kw)
