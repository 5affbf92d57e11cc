"""Language retention, the paper's Table 3: do the experts and the CycleQD model keep the base's general
skills? (``cycleqd leaderboard retention --run RUN_DIR [--config SPEC]``)

The models are those of one finished CycleQD run: its base and experts (from the run's config, the world
builder included), the mean merge of their task vectors (the same merge function as everywhere) and the
run's ``final_model``. One HF engine is built on the base; every model is swapped into it in place and
scored by lm-eval on that in-memory model (``harness/retention.py``), on the tasks a *retention spec*
names (a YAML file)::

    name: mini-retention
    network: false               # true: the tasks download datasets from the hub (refused when offline)
    unsafe_code: false           # true: tasks that execute model-written code may run
    batch_size: 16
    limit: {quick: 40, full: null}          # lm-eval documents per task (or one number); with tasks_from,
                                            # handed to it instead (the mini tasks count conversations)
    tasks_from: domains.mini.retention_tasks:tasks_for_base   # optional: writes local task YAMLs
    categories:                  # Table 3's columns; each the mean of its entries, normalised by the base
      Code: [{task: mini_retention_code_reply, metric: greedy}]

A category's score is the mean over its entries of (model / base) for a metric where higher is better
and (base / model) where lower is (``higher_is_better: false``); Avg is the mean over categories that have
entries (the paper normalises the same way: base = 1.00). ``configs/retention/mini.yaml`` is the mini
world's (offline; tasks written at run time); ``configs/retention/paper_table3.yaml`` names the paper's tasks.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.config import load_config
from harness.errors import ConfigError, HarnessError
from harness.leaderboard import Leaderboard
from harness.merging.safetensors_io import CheckpointReader
from harness.merging.streaming import merge_checkpoints
from harness.registry import MERGE_METHODS, load_ref
from harness.retention import evaluate_weights, is_offline
from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json
from harness.runner.worker import resolve_world
from harness.worlds import publish_stage

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
MINI_SPEC = REPO / "configs" / "retention" / "mini.yaml"
KEYS = {"name", "network", "unsafe_code", "batch_size", "limit", "tasks_from", "categories"}
ENTRY_KEYS = {"task", "metric", "num_fewshot", "higher_is_better", "note"}


def load_spec(path: Path) -> dict:
    """A retention spec, checked: unknown keys and malformed entries are one-line errors naming the file."""
    try:
        spec = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except (OSError, OmegaConfBaseException, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the retention spec ({str(exc).splitlines()[0]})") from None
    if not isinstance(spec, dict) or set(spec) - KEYS or not isinstance(spec.get("categories"), dict):
        raise ConfigError(f"{path}: a retention spec has categories (and optionally {sorted(KEYS - {'categories'})})")
    for cat, entries in spec["categories"].items():
        for i, e in enumerate(entries or []):
            if not isinstance(e, dict) or set(e) - ENTRY_KEYS or not e.get("task") or not e.get("metric"):
                raise ConfigError(f"{path}: categories.{cat}.{i}: needs {{task, metric}} (and optionally "
                                  f"{sorted(ENTRY_KEYS - {'task', 'metric'})})")
    if not any(spec["categories"].values()):
        raise ConfigError(f"{path}: no category names a task")
    return spec


def entries(spec: dict) -> list[dict]:
    return [e for es in spec["categories"].values() for e in (es or [])]


def _limit(spec: dict, variant: str) -> int | None:
    lim = spec.get("limit")
    return lim.get(variant) if isinstance(lim, dict) else lim


def _sha(model_dir: Path) -> str:
    """A short content hash of a model's weights (the reference check compares like with like)."""
    h = hashlib.sha256()
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()[:16]


def _state(model_dir: Path) -> dict:
    with CheckpointReader(model_dir) as r:
        return {k: r.read(k).clone() for k in r.keys()}


def default_run() -> Path:
    """The mini quick leaderboard's Table 1 CycleQD run (or its Table 2 CycleQD row), when it exists here."""
    for d in (REPO / "runs" / "mini-quick-seed0" / "qd_table1", REPO / "runs" / "mini-quick-seed0" / "qd_4"):
        if (d / "final_model").is_dir():
            return d
    raise ConfigError("leaderboard retention: give --run RUN_DIR (a finished CycleQD run with a final_model); "
                      "none of the mini quick runs exists under runs/mini-quick-seed0")


def models_of(run_dir: Path, out: Path) -> tuple[Path, list[tuple[str, Path]], dict]:
    """(base, [(row label, model dir)], engine config) of a finished run: base, experts, mean merge, CycleQD."""
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "final_model").is_dir():
        raise ConfigError(f"--run {run_dir}: not a finished run directory (needs config.yaml and final_model/)")
    cfg = load_config(run_dir / "config.yaml")
    base, experts, _ = resolve_world(cfg, run_dir)
    mean = publish_stage(out / "models" / "mean_merge",
                         lambda tmp: merge_checkpoints(base, list(experts.values()), MERGE_METHODS.get("mean").spec(), tmp))
    rows = [("Base model", base), *((f"Expert: {k}", Path(v)) for k, v in experts.items()),
            ("Merge: mean of task vectors", mean), ("CycleQD", run_dir / "final_model")]
    engine = OmegaConf.to_container(cfg.engine) or {}
    # lm-eval's HF wrapper needs the transformers model: an HF engine on the run's device and dtype
    engine_cfg = {"kind": "hf", "model": str(base), **{k: engine[k] for k in ("device", "dtype") if k in engine}}
    return Path(base), rows, engine_cfg


def normalise(scores: dict[str, dict[str, float]], spec: dict, base_label: str = "Base model") -> dict:
    """{model: {category: score / base score (mean over the category's entries), "Avg": ...}}; None where a
    category has no entries or the base scores 0."""
    out = {}
    for label, per in scores.items():
        row, vals = {}, []
        for cat, es in spec["categories"].items():
            ratios = []
            for e in es or []:
                key = f"{e['task']}/{e['metric']}"
                m, b = per.get(key), scores[base_label].get(key)
                if m is None or b is None or (b == 0 if e.get("higher_is_better", True) else m == 0):
                    ratios = None
                    break
                ratios.append(m / b if e.get("higher_is_better", True) else b / m)
            row[cat] = sum(ratios) / len(ratios) if ratios else None
            if row[cat] is not None:
                vals.append(row[cat])
        row["Avg"] = sum(vals) / len(vals) if vals else None
        out[label] = row
    return out


def primary(raw: dict[str, dict[str, float]], spec: dict, label: str) -> dict[str, float]:
    """The spec's metric of every entry ({"task/metric": value}); a missing one is an error listing those
    lm-eval returned (the raw results are already saved, so nothing is scored twice)."""
    out = {}
    for e in entries(spec):
        got = raw.get(e["task"], {})
        if e["metric"] not in got:
            raise HarnessError(f"retention: {label}: task {e['task']!r} returned no metric {e['metric']!r} "
                               f"(it returned {sorted(got) or 'nothing'})")
        out[f"{e['task']}/{e['metric']}"] = got[e["metric"]]
    return out


def run_retention(variant: str = "quick", seed: int = 0, out_dir: Path | None = None, progress: bool = True,
                  run: str = "", config: str = "") -> dict:
    spec_path = Path(config) if config else MINI_SPEC
    spec = load_spec(spec_path)
    if spec.get("network") and is_offline():
        raise ConfigError(f"{spec_path}: its lm-eval tasks download their datasets from the Hugging Face hub, but "
                          f"HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set: run it where the hub is reachable")
    say = print if progress else (lambda *a, **k: None)
    run_dir = Path(run) if run else default_run()
    name = spec.get("name", spec_path.stem)
    out = Path(out_dir or REPO / "runs" / f"retention-{name}-{variant}-seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    base, rows, engine_cfg = models_of(run_dir, out)
    limit = _limit(spec, variant)
    include = None  # tasks written here take the limit themselves (in conversations, not lm-eval documents)
    if spec.get("tasks_from"):
        include = load_ref(spec["tasks_from"], f"{spec_path}: tasks_from")(base, limit=limit, seed=seed)
    tasks = list(dict.fromkeys(e["task"] for e in entries(spec)))
    shots = {e["task"]: e["num_fewshot"] for e in entries(spec) if e.get("num_fewshot") is not None}
    # raw results are saved per model as soon as scored: a rerun with the same spec and models skips them
    raw_path = out / "raw.json"
    key = {"spec": spec, "variant": variant, "seed": seed, "models": {lab: _sha(d) for lab, d in rows}}
    saved = json.loads(raw_path.read_text()) if raw_path.is_file() else {}
    raw = saved.get("raw", {}) if saved.get("key") == key else {}
    seconds = saved.get("seconds", {}) if raw else {}
    for label, model_dir in rows:
        if label in raw:
            continue
        say(f"retention: {label} ({model_dir}) ...", flush=True)
        t1 = time.perf_counter()
        # swapped into the one engine in place: the engine's live model is what lm-eval scores
        raw[label] = evaluate_weights(engine_cfg, _state(model_dir), tasks, include_path=include, include_defaults=include is None,
                                     num_fewshot=shots, offline=not spec.get("network", False),
                                     batch_size=int(spec.get("batch_size", 8)), limit=None if include else limit,
                                     unsafe_code=bool(spec.get("unsafe_code", False)))
        seconds[label] = time.perf_counter() - t1
        atomic_write_json(raw_path, {"key": key, "raw": raw, "seconds": seconds}, indent=1)
    scores = {label: primary(raw[label], spec, label) for label, _ in rows}
    report = {"name": name, "variant": variant, "seed": seed, "out_dir": str(out), "spec": str(spec_path),
              "run_dir": str(run_dir), "models": {lab: {"dir": str(d), "sha": key["models"][lab]} for lab, d in rows},
              "categories": spec["categories"], "limit": limit, "scores": scores, "normalised": normalise(scores, spec),
              "raw": raw, "seconds": {**seconds, "total": time.perf_counter() - t0}}
    write_report(out, report)
    return report


# -- report -----------------------------------------------------------------------------------------------
def _f(v, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(report: dict) -> str:
    cats = list(report["categories"])
    lines = [f"### Language retention: {report['name']} ({report['variant']}, seed {report['seed']}; "
             f"scores normalised to the base model = 1.00)", "",
             "| Model | " + " | ".join(cats) + " | Avg |", "|---|" + "---|" * (len(cats) + 1)]
    for label, row in report["normalised"].items():
        lines.append(f"| {label} | " + " | ".join(_f(row[c]) for c in cats) + f" | {_f(row['Avg'])} |")
    keys = list(next(iter(report["scores"].values())))
    lines += ["", f"Raw scores (lm-eval; limit {report['limit'] or 'none'}; CycleQD = "
                  f"`{report['run_dir']}/final_model`)", "",
              "| Model | " + " | ".join(f"{k.split('/')[0]} {k.split('/', 1)[1]}" for k in keys) + " |",
              "|---|" + "---|" * len(keys)]
    for label, per in report["scores"].items():
        lines.append(f"| {label} | " + " | ".join(_f(per[k], 4) for k in keys) + " |")
    empty = [c for c, es in report["categories"].items() if not es]
    if empty:
        lines += ["", f"Not scored (no lm-eval task): {', '.join(empty)}."]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    md = markdown(report)
    atomic_write_bytes(out / "retention.md", md.encode())
    atomic_write_json(out / "report.json", report, indent=1)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report['name'])}</title></head>"
            f"<body><h1>Language retention</h1><pre>{html.escape(md)}</pre></body></html>")
    atomic_write_bytes(out / "index.html", page.encode())


def compare(report: dict, reference: dict, *, norm_tol: float = 0.05, raw_rel_tol: float = 0.05) -> list[str]:
    """Normalised cells within ``norm_tol`` and raw scores within ``raw_rel_tol`` of the reference (relative,
    plus 1e-3 absolute); the scored models must be the reference's (same weights)."""
    problems = []
    for k in ("name", "variant", "seed", "limit"):
        if report.get(k) != reference.get(k):
            problems.append(f"{k}: run has {report.get(k)!r}, reference has {reference.get(k)!r}")
    for label, ref in reference["models"].items():
        got = report["models"].get(label)
        if got is None:
            problems.append(f"model {label!r} is missing")
        elif got["sha"] != ref["sha"]:
            problems.append(f"{label}: other weights than the reference's ({got['sha']} vs {ref['sha']})")
    for label, ref in reference["normalised"].items():
        got = report["normalised"].get(label, {})
        for cat, r in ref.items():
            g = got.get(cat)
            if (g is None) != (r is None) or (r is not None and abs(g - r) > norm_tol + 1e-9):
                problems.append(f"{label} / {cat}: {_f(g)} vs reference {_f(r)} (tolerance {norm_tol})")
    for label, ref in reference["scores"].items():
        got = report["scores"].get(label, {})
        for k, r in ref.items():
            g = got.get(k)
            if g is None or abs(g - r) > raw_rel_tol * abs(r) + 1e-3:
                problems.append(f"{label} / {k}: {g} vs reference {r} (tolerance {100 * raw_rel_tol:.0f}%)")
    return problems


def _run(variant: str, seed: int, out_dir: Path | None, progress: bool, run: str = "", config: str = "") -> dict:
    return run_retention(variant, seed, out_dir, progress, run=run, config=config)


LEADERBOARD = Leaderboard(
    name="retention", description="language retention (Table 3): base, experts, mean merge and a run's CycleQD "
                                  "model on lm-eval tasks, normalised to the base",
    run=_run, compare=compare, summary_file="retention.md",
    options={"run": ((), "", "a finished CycleQD run directory (default: the mini quick run under runs/)"),
             "config": ((), "", "a retention spec (default: configs/retention/mini.yaml; "
                                "configs/retention/paper_table3.yaml: the paper's tasks, needs the hub)")})
