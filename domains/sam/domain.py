"""The SAM domain: promptable segmentation scored by mean IoU per instance (COCOeval AP reported too).

Each annotated instance is prompted with its box (default) or one point; the predicted mask (logits > 0)
is compared with the instance's mask at the image's own resolution. Quality = mean IoU over the split's
instances (``metric: ap`` makes COCOeval segm AP the quality instead). One SampleResult per image. The
model is built once per process and each child's weights are copied into it in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from omegaconf import MISSING

from domains.sam.coco import CocoSegmentation, coco_ap, mask_iou, to_original
from domains.sam.modeling import VARIANTS, build_sam, predict_masks
from harness.domain import (
    Domain,
    SampleResult,
    SampleStatus,
    TaskResult,
    register_domain,
)
from harness.episodes import split_of
from harness.errors import CheckpointError

_MODELS: dict[str, torch.nn.Module] = {}


def shared_model(model_cfg: Mapping) -> torch.nn.Module:

    key = json.dumps(dict(model_cfg), sort_keys=True)
    if key not in _MODELS:
        _MODELS[key] = build_sam(**dict(model_cfg))
    return _MODELS[key]


@torch.no_grad()
def load_in_place(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    own = model.state_dict()
    for name, t in own.items():
        src = state_dict.get(name)
        if src is None:
            raise CheckpointError(f"sam: state dict lacks {name!r}")
        if tuple(src.shape) != tuple(t.shape):
            raise CheckpointError(f"sam: {name!r} has shape {list(src.shape)}, the model has {list(t.shape)}")
        t.copy_(src.to(t.dtype))
    extra = [k for k in state_dict if k not in own]
    if extra:
        raise CheckpointError(f"sam: state dict has unexpected tensor {extra[0]!r}")


@dataclass
class SAMParams:
    """``annotations``: a COCO json (relative to the data root); ``images``: their directory (default: beside
    it); ``model``: {variant: tiny | vit_b | vit_l | vit_h, ...}; ``prompt``: box | point; ``metric``: the
    quality, miou | ap."""

    annotations: str = MISSING
    images: Optional[str] = None
    model: dict[str, Any] = field(default_factory=lambda: {"variant": "tiny"})
    prompt: str = "box"
    metric: str = "miou"
    batch_size: int = 8
    limit: Optional[int] = None

    def validate(self) -> None:
        if self.prompt not in ("box", "point"):
            raise ValueError(f"prompt: {self.prompt!r} is not one of ['box', 'point']")
        if self.metric not in ("miou", "ap"):
            raise ValueError(f"metric: {self.metric!r} is not one of ['miou', 'ap']")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")


@register_domain("sam")
class SAMDomain(Domain):
    Params = SAMParams

    def __init__(self, *, task, ctx, params: SAMParams):
        super().__init__(task=task, ctx=ctx, params=params)
        root = Path(ctx.data_root) if ctx.data_root else Path(".")
        self.ann_path = Path(params.annotations) if Path(params.annotations).is_absolute() else root / params.annotations
        self.images = None if params.images is None else (
            Path(params.images) if Path(params.images).is_absolute() else root / params.images)
        self.model_cfg = dict(params.model)
        self.prompt, self.metric, self.batch_size, self.limit = params.prompt, params.metric, params.batch_size, params.limit
        self.ds = None

    def setup(self) -> None:
        variant = self.model_cfg.get("variant", "tiny")
        size = self.model_cfg.get("img_size", VARIANTS.get(variant, VARIANTS["tiny"])["img_size"])
        self.ds = CocoSegmentation(self.ann_path, self.images, img_size=size)

    def split(self, name: str) -> list[int]:
        if self.ds is None:
            self.setup()
        n = min(len(self.ds), self.limit) if self.limit else len(self.ds)
        return split_of(n, self.ctx.seed, f"sam:{self.ann_path.parent.name}/{self.ann_path.name}", name)

    def score_model(self, model: torch.nn.Module, indices, with_ap: bool = False) -> tuple[TaskResult, dict]:
        """The task result and both metrics ({"miou", "ap"}; ap None unless asked or the quality)."""
        results, ious, preds = [], [], []
        model.eval()
        with torch.no_grad():
            for start in range(0, len(indices), self.batch_size):
                items = [self.ds.item(i) for i in indices[start : start + self.batch_size]]
                if self.prompt == "box":
                    logits = predict_masks(model, [it["image"] for it in items], boxes=[it["boxes"] for it in items])
                else:
                    logits = predict_masks(model, [it["image"] for it in items],
                                           points=[(it["points"], torch.ones(len(it["points"]), 1)) for it in items])
                for it, lg in zip(items, logits):
                    full = to_original(lg, it)
                    pred = full > 0
                    iou = mask_iou(pred, it["masks"])
                    ious += iou.tolist()
                    for k in range(len(pred)):  # confidence: mean probability inside the predicted mask
                        p = torch.sigmoid(full[k])
                        score = float(p[pred[k]].mean()) if pred[k].any() else 0.0
                        preds.append({"image_id": it["image_id"], "mask": pred[k], "score": score})
                    m = float(iou.mean())
                    results.append(SampleResult(f"{self.task}/{it['image_id']}",
                                                SampleStatus.SOLVED if m >= 0.5 else SampleStatus.WRONG, m,
                                                {"iou": [round(v, 4) for v in iou.tolist()]}))
        miou = sum(ious) / max(len(ious), 1)
        ap = coco_ap(self.ds, preds) if (self.metric == "ap" or with_ap) else None
        return TaskResult(miou if self.metric == "miou" else ap, results), {"miou": miou, "ap": ap}

    def evaluate(self, state_dict, *, split: str) -> TaskResult:
        if self.ds is None:
            self.setup()
        model = shared_model(self.model_cfg)
        load_in_place(model, state_dict)
        return self.score_model(model, self.split(split))[0]

    def metrics(self, state_dict, *, split: str) -> dict:
        """mIoU and COCOeval segm AP on a split (reports)."""
        if self.ds is None:
            self.setup()
        model = shared_model(self.model_cfg)
        load_in_place(model, state_dict)
        return self.score_model(model, self.split(split), with_ap=True)[1]
