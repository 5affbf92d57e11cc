"""The SAM mini world: synthetic COCO datasets, a tiny SAM pretrained on shapes, five task experts.

``ensure_sam_world(**params)`` builds what is missing under ``<cache>/sam/<hash>`` (the hash covers
the params and this package's source) and returns the paths. Stages are published atomically, so a
killed build resumes. The base is trained from scratch on the generic ``shapes`` set with box prompts;
each expert is fine-tuned from it on one task (``train_modules``: ``all``, ``decoder`` = the mask
decoder only, or ``neck+decoder`` = the encoder's neck and the mask decoder) with ``finetune_optimizer``
(default SGD with momentum: light fine-tunes, see the README's regime table; the base uses AdamW), warm-up
and cosine decay, BCE + Dice on the instance masks.
The ``sam`` builder hands a run the base, the experts it names and the data root.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from domains.sam.coco import CocoSegmentation, to_original
from domains.sam.modeling import VARIANTS, build_sam, predict_masks
from domains.sam.synthetic import write_dataset
from envs.rootfs import cache_root
from harness.errors import ConfigError
from harness.merging.safetensors_io import CheckpointReader, save_state_dict
from harness.schedules import warmup_cosine
from harness.worlds import publish_stage as _stage
from harness.worlds import register_builder

TASKS = ("camouflage", "polyp", "skin", "leaf", "crack")
# parameter-name prefixes each ``train_modules`` choice trains (the rest stay at the base)
TRAIN_MODULES = {"all": ("",), "decoder": ("mask_decoder.",), "neck+decoder": ("image_encoder.neck.", "mask_decoder.")}
DEFAULTS: dict[str, Any] = {
    "seed": 0, "n_pretrain": 600, "n_train": 200, "n_eval": 80, "pretrain_steps": 1500, "finetune_steps": 150,
    "batch_size": 8, "pretrain_lr": 2e-3, "finetune_lr": 1e-2, "finetune_optimizer": "sgd", "warmup": 30,
    "train_modules": "all", "model": {"variant": "tiny"},
}  # the experts: light SGD fine-tunes of the whole model (the README's regime table says why)
OPTIMIZERS = {"adamw": lambda params, lr: torch.optim.AdamW(params, lr=lr, weight_decay=0.0),
              "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9)}
RECIPE_VERSION = 2  # bump when the build logic in this module changes what it produces
_SOURCES = ("synthetic.py", "modeling.py", "coco.py")


def recipe(**params) -> dict:

    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"sam world: unknown parameter {unknown[0]!r} (known: {sorted(DEFAULTS)})")
    r = {**DEFAULTS, **params}
    if r["finetune_optimizer"] not in OPTIMIZERS:
        raise ConfigError(f"sam world: finetune_optimizer {r['finetune_optimizer']!r} is not one of {list(OPTIMIZERS)}")
    if r["train_modules"] not in TRAIN_MODULES:
        raise ConfigError(f"sam world: train_modules {r['train_modules']!r} is not one of {list(TRAIN_MODULES)}")
    here = Path(__file__).parent
    r["_code"] = hashlib.sha256(b"".join((here / f).read_bytes() for f in _SOURCES)).hexdigest()[:16]
    r["_version"] = RECIPE_VERSION
    return r


def seg_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """BCE + Dice, averaged over instances (SAM's own recipe weights focal and dice; BCE is enough here)."""
    g = gt.float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, g)
    p = torch.sigmoid(logits).flatten(1)
    dice = 1 - (2 * (p * g.flatten(1)).sum(1) + 1) / (p.sum(1) + g.flatten(1).sum(1) + 1)
    return bce + dice.mean()


def train_sam(model, datasets: Sequence, *, steps: int, lr: float, batch_size: int, warmup: int, seed: int,
              modules: str = "all", optimizer: str = "adamw", desc: str | None = None) -> list[float]:
    """Box-prompted training on images drawn by a seeded sampler; boxes jittered by up to 2 pixels.
    ``optimizer``: ``adamw`` or ``sgd`` (momentum 0.9): AdamW moves every weight by about lr per step
    whatever its gradient, SGD in proportion to it (see the README's regime table for what each gives)."""


    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = []
    for n, p in model.named_parameters():  # frozen parts get no gradient at all: a decoder-only step is cheaper
        p.requires_grad_(n.startswith(TRAIN_MODULES[modules]))
        if p.requires_grad:
            params.append(p)
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"sam world: optimizer {optimizer!r} is not one of {list(OPTIMIZERS)}")
    opt = OPTIMIZERS[optimizer](params, lr)
    pool = [(d, i) for d in datasets for i in range(len(d))]
    model.train()
    losses = []
    for step in tqdm(range(steps), desc=desc or "train", disable=desc is None, leave=False):
        items = [d.item(i) for d, i in (rng.choice(pool) for _ in range(batch_size))]
        boxes = []
        for it in items:
            b = it["boxes"] + torch.tensor([rng.uniform(-2, 2) for _ in range(4 * len(it["boxes"]))]).view(-1, 4)
            boxes.append(b.clamp(0, model.image_encoder.img_size))
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, steps, lr, warmup)
        logits = predict_masks(model, [it["image"] for it in items], boxes=boxes)
        loss = sum(seg_loss(to_original(lg, it), it["masks"]) for lg, it in zip(logits, items)) / len(items)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def _save(model, out: Path, meta: dict) -> None:

    save_state_dict(out / "model.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    (out / "training.json").write_text(json.dumps(meta))


def ensure_sam_world(progress: bool = True, **params) -> dict[str, Path]:
    """Build what is missing; return {"dir", "data_root", "base", <task>: expert dir, ...}."""
    r = recipe(**params)
    root = cache_root() / "sam" / f"world-{hashlib.sha256(json.dumps(r, sort_keys=True).encode()).hexdigest()[:12]}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.json").write_text(json.dumps(r, indent=1, sort_keys=True))
    say = print if progress else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    size = r["model"].get("img_size", VARIANTS[r["model"].get("variant", "tiny")]["img_size"])

    def make_data(tmp: Path) -> None:
        write_dataset("shapes", r["n_pretrain"], r["seed"], tmp / "shapes_train")
        for t in TASKS:
            write_dataset(t, r["n_train"], r["seed"], tmp / f"{t}_train")
            write_dataset(t, r["n_eval"], r["seed"] + 10_000, tmp / f"{t}_eval")

    t0 = time.perf_counter()
    data = _stage(root / "data", make_data)
    timings["data"] = time.perf_counter() - t0
    # one thread: on this 2-core machine shared with another job, two threads ran the tiny model's steps
    # 8x slower (1 vs 8 steps/s), spinning against the other job; CycleQD's runs use one thread as well
    torch.set_num_threads(1)

    def ds(name):
        return CocoSegmentation(data / name / "annotations.json", img_size=size)

    def make_base(tmp: Path) -> None:
        say("sam world: pretraining the tiny SAM on shapes ...", flush=True)
        torch.manual_seed(r["seed"])
        model = build_sam(**r["model"])
        losses = train_sam(model, [ds("shapes_train")], steps=r["pretrain_steps"], lr=r["pretrain_lr"],
                           batch_size=r["batch_size"], warmup=r["warmup"], seed=r["seed"],
                           desc="pretrain sam" if progress else None)
        _save(model, tmp, {"stage": "base", "loss_first": losses[0], "loss_last": sum(losses[-50:]) / 50,
                           "params": sum(p.numel() for p in model.parameters())})

    t0 = time.perf_counter()
    base = _stage(root / "base", make_base)
    timings["base"] = time.perf_counter() - t0
    out: dict[str, Path] = {"dir": root, "data_root": data, "base": base}
    for t in TASKS:
        def make_expert(tmp: Path, t=t) -> None:
            say(f"sam world: fine-tuning the {t} expert ...", flush=True)
            model = build_sam(**r["model"])
            with CheckpointReader(base) as rd:
                model.load_state_dict({k: rd.read(k) for k in rd.keys()})
            losses = train_sam(model, [ds(f"{t}_train")], steps=r["finetune_steps"], lr=r["finetune_lr"],
                               batch_size=r["batch_size"], warmup=r["warmup"], seed=r["seed"] + 1,
                               modules=r["train_modules"], optimizer=r["finetune_optimizer"], desc=f"fine-tune {t}" if progress else None)
            _save(model, tmp, {"stage": t, "loss_first": losses[0], "loss_last": sum(losses[-50:]) / 50})

        t0 = time.perf_counter()
        out[t] = _stage(root / "experts" / t, make_expert)
        timings[f"expert_{t}"] = time.perf_counter() - t0
    bt = root / "build_timings.json"
    prev = json.loads(bt.read_text()) if bt.exists() else {}
    bt.write_text(json.dumps({**prev, **{k: round(v, 2) for k, v in timings.items() if v > 0.05}}, indent=1))
    return out


@register_builder("sam")
def build_sam_world(out_dir: Path, experts: Sequence[str] = TASKS, **params) -> dict[str, Path]:

    bad = [e for e in experts if e not in TASKS]
    if bad:
        raise ConfigError(f"model.builder.params.experts: unknown task {bad[0]!r} (known: {list(TASKS)})")
    w = ensure_sam_world(progress=False, **params)
    return {"base": w["base"], **{e: w[e] for e in experts}, "data_root": w["data_root"]}
