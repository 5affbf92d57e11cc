"""COCO instance-segmentation datasets for SAM: loading, box / point prompts, IoU and COCOeval AP.

Any COCO-format annotation file (polygons or RLE) with its image directory. Images are resized so the
longest side is the model's input size (SAM's own convention; the model pads the rest); prompts are
scaled with them, and predicted masks are mapped back to the original resolution before scoring, so the
metrics are on the dataset's own masks.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from harness.errors import HarnessError


def _quiet():
    return contextlib.redirect_stdout(io.StringIO())  # pycocotools prints on every call


class CocoSegmentation:
    def __init__(self, annotations: str | Path, images: str | Path | None = None, img_size: int = 1024):
        from pycocotools.coco import COCO  # optional: the 'sam' extra

        self.ann_path = Path(annotations)
        self.image_dir = Path(images) if images else self.ann_path.parent / "images"
        if not self.ann_path.is_file():
            raise HarnessError(f"sam: annotation file {self.ann_path} does not exist")
        try:
            data = json.loads(self.ann_path.read_text())
        except json.JSONDecodeError as exc:
            raise HarnessError(f"{self.ann_path}: not valid JSON ({exc.msg})") from None
        for key in ("images", "annotations"):
            if key not in data:
                raise HarnessError(f"{self.ann_path}: not a COCO file (no {key!r})")
        for a in data["annotations"]:
            a.setdefault("iscrowd", 0)
            if "segmentation" not in a or "bbox" not in a:
                raise HarnessError(f"{self.ann_path}: annotation {a.get('id')} lacks a segmentation or bbox")
        data.setdefault("categories", [{"id": c, "name": str(c)} for c in {a["category_id"] for a in data["annotations"]}])
        with _quiet():
            self.coco = COCO()
            self.coco.dataset = data
            self.coco.createIndex()
        self.img_size = img_size
        self.image_ids = sorted(i for i in self.coco.imgs if self.coco.getAnnIds(imgIds=i, iscrowd=False))
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.image_ids)

    def item(self, index: int) -> dict:
        """{"image": 3xSxS float 0-255 (resized), "masks": n x H x W bool (original), "boxes": n x 4 XYXY
        (resized frame), "points": n x 1 x 2, "scale", "size": (H, W), "image_id", "ann_ids"}"""
        iid = self.image_ids[index]
        if iid in self._cache:
            return self._cache[iid]
        from PIL import Image  # optional: the 'sam' extra

        info = self.coco.imgs[iid]
        path = self.image_dir / info["file_name"]
        try:
            arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise HarnessError(f"sam: cannot read image {path} ({exc})") from None
        h, w = arr.shape[:2]
        if (h, w) != (info["height"], info["width"]):
            raise HarnessError(f"{path}: image is {w}x{h}, the annotation says {info['width']}x{info['height']}")
        scale = self.img_size / max(h, w)
        img = torch.from_numpy(arr).permute(2, 0, 1)
        if scale != 1:
            nh, nw = round(h * scale), round(w * scale)
            img = torch.nn.functional.interpolate(img[None], (nh, nw), mode="bilinear", align_corners=False)[0]
        anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=iid, iscrowd=False))
        masks = torch.from_numpy(np.stack([self.coco.annToMask(a) for a in anns]).astype(bool))
        boxes = torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in (a["bbox"] for a in anns)], dtype=torch.float32)
        # a point prompt: the mask pixel nearest its centre of mass (inside even for non-convex masks)
        pts = []
        for m in masks:
            ys, xs = torch.nonzero(m, as_tuple=True)
            cy, cx = ys.float().mean(), xs.float().mean()
            k = torch.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
            pts.append([float(xs[k]) + 0.5, float(ys[k]) + 0.5])
        item = {"image": img, "masks": masks, "boxes": boxes * scale, "points": torch.tensor(pts)[:, None, :] * scale,
                "scale": scale, "size": (h, w), "image_id": iid, "ann_ids": [a["id"] for a in anns]}
        self._cache[iid] = item
        return item


def to_original(logits: torch.Tensor, item: dict) -> torch.Tensor:
    """Logits at the model's input size -> the original image's size (crop the padding, resize)."""
    h, w = item["size"]
    nh, nw = round(h * item["scale"]), round(w * item["scale"])
    x = logits[:, :nh, :nw]
    if (nh, nw) != (h, w):
        x = torch.nn.functional.interpolate(x[None], (h, w), mode="bilinear", align_corners=False)[0]
    return x


def mask_iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-instance IoU of boolean masks (n x H x W each); an empty union counts as 1."""
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def coco_ap(ds: CocoSegmentation, predictions: list[dict]) -> float:
    """COCOeval segm AP (IoU 0.50:0.95) of ``[{"image_id", "mask" (H x W bool), "score"}]``."""
    from pycocotools import mask as mask_utils  # optional: the 'sam' extra
    from pycocotools.cocoeval import COCOeval  # optional: the 'sam' extra

    if not predictions:
        return 0.0
    res = []
    for p in predictions:
        rle = mask_utils.encode(np.asfortranarray(p["mask"].numpy().astype(np.uint8)))
        res.append({"image_id": p["image_id"], "category_id": p.get("category_id", 1), "score": float(p["score"]),
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    img_ids = sorted({p["image_id"] for p in predictions})
    with _quiet():
        dt = ds.coco.loadRes(res)
        ev = COCOeval(ds.coco, dt, iouType="segm")
        ev.params.imgIds = img_ids
        ev.params.useCats = 0  # prompts say which object; the category is not the question
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return max(0.0, float(ev.stats[0]))
