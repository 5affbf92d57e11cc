"""The paper's Table 4 on the SAM mini world: CycleQD with K = 2 over each pair of the five experts.

For each pair (A, B) one CycleQD run of ``configs/sam_pairs.yaml`` (archives for A and B, each score the
other's behaviour axis). Scores on the test split are normalised by each expert's own test score;
Similarity(A, B) = mean over weight matrices of rank > 1 of the cosine between the singular-value
vectors of the two task vectors. The mean-merge baseline stands beside CycleQD, and the report gives the
Pearson correlation between Avg and Similarity (paper: r = 0.83). Also: every expert and the base on
every task, the trivial "prompt box as the mask" baseline, and mask overlays.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from domains.sam.coco import mask_iou, to_original
from domains.sam.domain import load_in_place, shared_model
from domains.sam.modeling import predict_masks
from domains.sam.similarity import task_vector_similarity  # noqa: F401 - Table 4's measure, used below
from domains.sam.world import TASKS, ensure_sam_world
from harness.config import load_config
from harness.domain import DomainContext, build_domain
from harness.leaderboard import Leaderboard
from harness.merging.safetensors_io import CheckpointReader
from harness.runner.checkpoint import atomic_write_bytes, atomic_write_json, read_json
from leaderboards.methods import run_cycleqd
from leaderboards.regression import compare_table4

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "sam_pairs.yaml"
SHORT = {"camouflage": "CAM", "polyp": "POL", "skin": "SKL", "leaf": "LEA", "crack": "CRK"}
VARIANTS = {
    "quick": {"world": {"pretrain_steps": 1200}, "generations": 30},
    "full": {"world": {}, "generations": 100},
}


def pearson(x: list, y: list) -> float | None:
    """Pearson r over the pairs where both values are defined; None with fewer than 3 or no spread."""
    pts = [(a, b) for a, b in zip(x, y) if a is not None and b is not None]
    if len(pts) < 3:
        return None
    xa, ya = np.asarray(pts, dtype=float).T
    if xa.std() == 0 or ya.std() == 0:
        return None
    return float(np.corrcoef(xa, ya)[0, 1])


def pearson_ci(r: float | None, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of a Pearson r over ``n`` pairs (Fisher z; needs n >= 4): with the paper's 6
    pairs an r of 0.83 spans about 0.07-0.98, so a mini r says little without it."""
    if r is None or n < 4:
        return None
    z = math.atanh(max(-0.999999, min(0.999999, r)))
    half = statistics.NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def box_baseline(domain, split: str) -> float:
    """mIoU of the trivial prediction "the prompt box is the mask"."""
    ious = []
    for i in domain.split(split):
        it = domain.ds.item(i)
        h, w = it["size"]
        pred = torch.zeros(len(it["boxes"]), h, w, dtype=torch.bool)
        for k, (x0, y0, x1, y1) in enumerate((it["boxes"] / it["scale"]).tolist()):
            pred[k, int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = True
        ious += mask_iou(pred, it["masks"]).tolist()
    return sum(ious) / max(len(ious), 1)


def _state(d: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(d) as r:
        return {k: r.read(k).float().clone() for k in r.keys()}


def _normalised(s: dict, a: str, b: str, own_a: float, own_b: float) -> tuple[float | None, float | None]:
    return (s[a] / own_a if own_a else None, s[b] / own_b if own_b else None)


def mean2(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else (x + y) / 2


def run_table4(variant_name: str = "quick", seed: int = 0, out_dir: Path | None = None, progress: bool = True,
               variant: dict | None = None) -> dict:
    v = dict(variant or VARIANTS[variant_name])
    out = Path(out_dir or REPO / "runs" / f"sam-{variant_name}-seed{seed}")
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    world = ensure_sam_world(progress=progress, **v["world"])
    timings = {"build_world": time.perf_counter() - t0}
    states = {k: _state(world[k]) for k in ("base", *TASKS)}

    # every expert and the base on every task (test split), and the box baseline
    cfg0 = load_config(CONFIG, [f"seed={seed}"])
    task_params = dict(cfg0.tasks[0].params)
    ctx = DomainContext(run_dir=out, seed=seed, data_root=world["data_root"], base_dir=world["base"])
    doms = {t: build_domain("sam", task=t, ctx=ctx, params={**task_params, "annotations": f"{t}_eval/annotations.json"})
            for t in TASKS}
    for d in doms.values():
        d.setup()
    t1 = time.perf_counter()
    experts_table = {name: {t: doms[t].metrics(states[name], split="test") for t in TASKS} for name in ("base", *TASKS)}
    experts_table["box as mask"] = {t: {"miou": box_baseline(doms[t], "test"), "ap": None} for t in TASKS}
    timings["experts_table"] = time.perf_counter() - t1

    rows, overlays = [], []
    t1 = time.perf_counter()
    for a, b in itertools.combinations(TASKS, 2):
        run_dir = out / f"pair_{a}_{b}"
        say(f"sam: CycleQD on {SHORT[a]}+{SHORT[b]} ...", flush=True)
        def pair_config(a=a, b=b):
            cfg = load_config(CONFIG, [f"seed={seed}", f"qd.generations={v['generations']}"])
            cfg.model.builder.params = {**cfg.model.builder.params, **v["world"], "experts": [a, b]}
            for tc, t in zip(cfg.tasks, (a, b)):  # the config's two task slots, renamed for this pair
                tc.name, tc.params.annotations = t, f"{t}_eval/annotations.json"
            if v.get("bounds"):  # explicit behaviour ranges instead of the paper's from expert scores
                cfg.qd.bounds = {t: list(v["bounds"]) for t in (a, b)}
            return cfg

        res = run_cycleqd(run_dir, pair_config, progress)
        by = {r["model"]: r["test"] for r in res["rows"]}
        own_a, own_b = by[f"expert:{a}"][a], by[f"expert:{b}"][b]
        # normalised by the expert's own score; undefined (None) where an expert scores 0 on its task
        ca, cb = _normalised(by["cycleqd"], a, b, own_a, own_b)
        ma, mb = _normalised(by["mean_merge"], a, b, own_a, own_b)
        sim = task_vector_similarity(states["base"], states[a], states[b])
        rows.append({"pair": f"{SHORT[a]}+{SHORT[b]}", "a": a, "b": b, "score_a": ca, "score_b": cb,
                     "avg": mean2(ca, cb), "similarity": None if sim != sim else sim,
                     "mean_merge_a": ma, "mean_merge_b": mb, "mean_merge_avg": mean2(ma, mb),
                     "raw": {"cycleqd": by["cycleqd"], "mean_merge": by["mean_merge"], "expert_a": own_a, "expert_b": own_b}})
        overlays.append((a, b, run_dir / "final_model"))
    timings["cycleqd_runs"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    report = {"variant": variant_name, "seed": seed, "out_dir": str(out), "tasks": list(TASKS),
              "world": {"dir": str(world["dir"]), "recipe": read_json(world["dir"] / "recipe.json")},
              "experts": experts_table, "table4": rows,
              "r_avg_similarity": pearson([r["avg"] for r in rows], [r["similarity"] for r in rows]),
              "r_mean_merge_similarity": pearson([r["mean_merge_avg"] for r in rows], [r["similarity"] for r in rows]),
              "similarity_range": _range([r["similarity"] for r in rows]),
              "timings": timings}
    n_pairs = sum(1 for r in rows if r["avg"] is not None and r["similarity"] is not None)
    report["n_pairs"] = n_pairs
    report["r_avg_similarity_ci95"] = pearson_ci(report["r_avg_similarity"], n_pairs)
    report["regime"] = regime(experts_table, TASKS)
    write_report(out, report, doms, states, overlays)
    return report


def regime(experts_table: dict, tasks) -> dict:
    """The paper's regime, measured: each expert's mIoU gain over the base on its own task (should be > 0)
    and its mean change on the other tasks (a light fine-tune leaves them near the base's)."""
    base = experts_table["base"]
    own = {t: experts_table[t][t]["miou"] - base[t]["miou"] for t in tasks}
    others = {t: sum(experts_table[t][o]["miou"] - base[o]["miou"] for o in tasks if o != t) / (len(tasks) - 1)
              for t in tasks}
    return {"own_gain": own, "others_change": others, "every_expert_beats_base": all(v > 0 for v in own.values())}


# -- report -----------------------------------------------------------------------------------------
def _range(values: list) -> list[float] | None:
    vals = [v for v in values if v is not None and v == v]
    return [min(vals), max(vals)] if vals else None


def _f(v, pct=False) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{100 * v:.1f}" if pct else f"{v:.2f}"


def markdown(report: dict) -> str:
    tasks = report["tasks"]
    lines = [f"### Mini SAM Table 4 ({report['variant']} variant, seed {report['seed']}; test split, scores normalised "
             "by each expert's own score)", "",
             "| Pair | Score A | Score B | Avg | Similarity | Mean merge A | Mean merge B | Mean merge Avg |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report["table4"]:
        lines.append(f"| {r['pair']} | {_f(r['score_a'])} | {_f(r['score_b'])} | {_f(r['avg'])} | {_f(r['similarity'])} | "
                     f"{_f(r['mean_merge_a'])} | {_f(r['mean_merge_b'])} | {_f(r['mean_merge_avg'])} |")
    ci = report.get("r_avg_similarity_ci95")
    rng = report.get("similarity_range")
    lines += ["", f"Pearson r(Avg, Similarity) = {_f(report['r_avg_similarity'])}"
                  + (f" (95% CI {_f(ci[0])} to {_f(ci[1])}, Fisher z, {report.get('n_pairs', len(report['table4']))} pairs)"
                     if ci else f" ({report.get('n_pairs', len(report['table4']))} pairs)")
                  + (f"; similarities span {_f(rng[0])} to {_f(rng[1])}" if rng else "") + " (paper: 0.83); "
                  f"mean merge: r = {_f(report['r_mean_merge_similarity'])}", "",
              "### Experts (mIoU %, test split; COCO segm AP in parentheses)", "",
              "| Model | " + " | ".join(SHORT[t] for t in tasks) + " |", "|---|" + "---|" * len(tasks)]
    for name, per in report["experts"].items():
        cells = [f"{_f(per[t]['miou'], True)}" + (f" ({_f(per[t]['ap'], True)})" if per[t]["ap"] is not None else "")
                 for t in tasks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    reg = report.get("regime")
    if reg:
        lines += ["", "Regime (mIoU points against the base): own-task gain "
                  + ", ".join(f"{SHORT[t]} {100 * reg['own_gain'][t]:+.1f}" for t in tasks)
                  + "; mean change on the other tasks "
                  + ", ".join(f"{SHORT[t]} {100 * reg['others_change'][t]:+.1f}" for t in tasks)
                  + ("" if reg["every_expert_beats_base"] else " (NOT every expert beats the base on its own task)")]
    return "\n".join(lines) + "\n"


def _overlay_png(domain, states: list[tuple[str, dict]], index: int) -> bytes:
    """One test image: the ground truth and each model's box-prompted masks outlined."""
    from PIL import Image, ImageDraw  # optional: the 'sam' extra


    it = domain.ds.item(domain.split("test")[index])
    img = it["image"].permute(1, 2, 0).clamp(0, 255).byte().numpy()
    panels = [("truth", it["masks"].numpy())]
    model = shared_model(domain.model_cfg)
    for label, sd in states:
        load_in_place(model, sd)
        with torch.no_grad():

            lg = predict_masks(model, [it["image"]], boxes=[it["boxes"]])[0]
        panels.append((label, (to_original(lg, it) > 0).numpy()))
    scale = 3
    tiles = []
    for label, masks in panels:
        ov = img.copy()
        for m in masks:
            edge = m & ~(np.roll(m, 1, 0) & np.roll(m, -1, 0) & np.roll(m, 1, 1) & np.roll(m, -1, 1))
            ov[edge] = (255, 255, 0)
        tile = Image.fromarray(ov).resize((ov.shape[1] * scale, ov.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("RGB", (tile.width, tile.height + 14), "white")
        canvas.paste(tile, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), label, fill="black")
        tiles.append(canvas)
    grid = Image.new("RGB", (sum(t.width for t in tiles), tiles[0].height), "white")
    x = 0
    for t in tiles:
        grid.paste(t, (x, 0))
        x += t.width
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    return buf.getvalue()


def write_report(out: Path, report: dict, doms, states, overlays) -> None:
    md = markdown(report)
    atomic_write_bytes(out / "table4.md", md.encode())
    atomic_write_json(out / "report.json", report, indent=1)

    buf = io.StringIO()
    cols = ["pair", "score_a", "score_b", "avg", "similarity", "mean_merge_a", "mean_merge_b", "mean_merge_avg"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in report["table4"]:
        w.writerow(r)
    atomic_write_bytes(out / "table4.csv", buf.getvalue().encode())
    imgs = []
    for a, b, final_dir in overlays:
        merged = _state(final_dir)
        for t in (a, b):
            png = _overlay_png(doms[t], [("base", states["base"]), (f"expert {SHORT[t]}", states[t]),
                                         (f"CycleQD {SHORT[a]}+{SHORT[b]}", merged)], 0)
            imgs.append(f"<figure><img src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                        f"<figcaption>{html.escape(SHORT[t])} test image, pair {SHORT[a]}+{SHORT[b]}</figcaption></figure>")
    body = html.escape(md).replace("\n", "<br>\n")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>CycleQD SAM mini world</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}figure{{display:inline-block;margin:6px}}</style>
</head><body><h1>CycleQD on the SAM mini world</h1><p style="font-family:monospace">{body}</p>
<p>Timings (s): {html.escape(json.dumps({k: round(v) for k, v in report['timings'].items()}))}</p>
<h2>Mask overlays (box prompts; yellow outlines)</h2>{''.join(imgs)}</body></html>"""
    atomic_write_bytes(out / "index.html", page.encode())


LEADERBOARD = Leaderboard(
    name="sam", description="the SAM mini world: five segmentation experts, pairwise CycleQD, Table 4",
    run=lambda variant, seed, out_dir, progress: run_table4(variant, seed, out_dir, progress=progress),
    compare=compare_table4, summary_file="table4.md")
