"""Fine-tuning regimes for the SAM world's experts, measured side by side (the README's regime table).

Why: the experts should be light fine-tunes of one pretrained base (the paper's regime): each clearly
better than the base on its own task, the other tasks not wrecked, and task vectors whose singular-value
similarities differ between pairs. This builds the world's data and base once (the quick variant's
recipe), fine-tunes the five experts under each setting in turn, and prints per setting: every model on
every task (mIoU, test split), each expert's gain on its own task and its mean change on the others, the
relative size of the task vectors and the range of the pairwise similarities. The choice of a setting is
meant to rest on those, not on the Table 4 correlation, which this does not compute.

    python -m domains.sam.sweep OUT_DIR all:1e-3:300 decoder:1e-3:150 ...   (modules:lr:steps[:adamw|sgd])
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from domains.sam.coco import CocoSegmentation
from domains.sam.modeling import build_sam
from domains.sam.similarity import task_vector_similarity  # Table 4's own measure
from domains.sam.synthetic import write_dataset
from domains.sam.world import DEFAULTS, TASKS, train_sam
from harness.domain import DomainContext, build_domain
from harness.merging.safetensors_io import CheckpointReader, save_state_dict


def _data_and_base(out: Path, r: dict) -> Path:
    """The world's data and pretrained base under ``out`` (reused when already there)."""
    data = out / "data"
    if not (data / "done").exists():
        write_dataset("shapes", r["n_pretrain"], r["seed"], data / "shapes_train")
        for t in TASKS:
            write_dataset(t, r["n_train"], r["seed"], data / f"{t}_train")
            write_dataset(t, r["n_eval"], r["seed"] + 10_000, data / f"{t}_eval")
        (data / "done").write_text("")
    base = out / "base"
    if not (base / "model.safetensors").exists():
        torch.manual_seed(r["seed"])
        model = build_sam(**r["model"])
        train_sam(model, [CocoSegmentation(data / "shapes_train" / "annotations.json", img_size=64)],
                  steps=r["pretrain_steps"], lr=r["pretrain_lr"], batch_size=r["batch_size"], warmup=r["warmup"],
                  seed=r["seed"], desc="pretrain")
        base.mkdir(parents=True, exist_ok=True)
        save_state_dict(base / "model.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    return base


def _load(d: Path) -> dict[str, torch.Tensor]:
    with CheckpointReader(d) as rd:
        return {k: rd.read(k).float().clone() for k in rd.keys()}


def measure(out: Path, settings: list[str], *, pretrain_steps: int = 1200) -> list[dict]:
    r = {**DEFAULTS, "pretrain_steps": pretrain_steps}
    base_dir = _data_and_base(out, r)
    base = _load(base_dir)
    data = out / "data"
    ctx = DomainContext(run_dir=out, seed=0, data_root=data, base_dir=base_dir)
    doms = {t: build_domain("sam", task=t, ctx=ctx, params={"annotations": f"{t}_eval/annotations.json",
                                                            "model": {"variant": "tiny"}, "prompt": "box", "metric": "miou"})
            for t in TASKS}
    for d in doms.values():
        d.setup()

    def scores(sd):
        return {t: doms[t].metrics(sd, split="test")["miou"] for t in TASKS}

    base_scores = scores(base)
    results = []
    for s in settings:
        modules, lr, steps, *opt = s.split(":")
        experts = {}
        for t in TASKS:
            model = build_sam(**r["model"])
            model.load_state_dict(base)
            train_sam(model, [CocoSegmentation(data / f"{t}_train" / "annotations.json", img_size=64)],
                      steps=int(steps), lr=float(lr), batch_size=r["batch_size"], warmup=r["warmup"],
                      seed=r["seed"] + 1, modules=modules, optimizer=(opt or ["adamw"])[0], desc=f"{s} {t}")
            experts[t] = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
        table = {t: scores(experts[t]) for t in TASKS}
        sims = {f"{a}+{b}": task_vector_similarity(base, experts[a], experts[b])
                for a, b in itertools.combinations(TASKS, 2)}
        norm = {t: float(torch.cat([(experts[t][k] - base[k]).flatten() for k in base]).norm()
                         / torch.cat([base[k].flatten() for k in base]).norm()) for t in TASKS}
        res = {"setting": s, "base": base_scores, "experts": table, "similarities": sims,
               "similarity_range": [min(sims.values()), max(sims.values())],
               "own_gain": {t: table[t][t] - base_scores[t] for t in TASKS},
               "others_change": {t: sum(table[t][o] - base_scores[o] for o in TASKS if o != t) / (len(TASKS) - 1)
                                 for t in TASKS},
               "tau_over_theta": norm}
        results.append(res)
        print(json.dumps(res), flush=True)
        with (out / "sweep.jsonl").open("a") as f:
            f.write(json.dumps(res) + "\n")
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("settings", nargs="+", help="modules:lr:steps[:optimizer], e.g. decoder:1e-3:150 or all:0.01:150:sgd")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    measure(a.out, a.settings)


if __name__ == "__main__":
    main()
