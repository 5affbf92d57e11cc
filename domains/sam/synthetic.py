"""Synthetic COCO datasets for the SAM mini world: the paper's four tasks and a fifth that differs in kind.

* ``shapes``: flat-colored ellipses and rectangles on noisy backgrounds (pretrains the tiny base);
* ``camouflage``: an object filled with the background's own texture, slightly shifted in tone;
* ``polyp``: bright, soft-edged round blobs in a reddish tissue-like texture;
* ``skin``: dark irregular blobs on a skin-toned background;
* ``leaf``: many small brown spots on a green leaf (many small instances);
* ``crack``: one or two thin dark wandering lines on grey concrete (thin, elongated instances that fill
  a small part of their box, so the box says little about the mask: a fifth task unlike the four blobs).

Images are 64 x 64 RGB PNGs; annotations are COCO instance annotations with RLE masks (pycocotools).
Everything is a function of (kind, seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

KINDS = ("shapes", "camouflage", "polyp", "skin", "leaf", "crack")
SIZE = 64


def _noise(rng: np.random.Generator, cells: int, size: int = SIZE) -> np.ndarray:
    """Smooth value noise in [0, 1]: a random grid upsampled bilinearly."""
    g = torch.from_numpy(rng.random((1, 1, cells, cells)).astype(np.float32))
    return torch.nn.functional.interpolate(g, (size, size), mode="bilinear", align_corners=True)[0, 0].numpy()


def _blob(rng, cx, cy, r, irregular: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    ang = np.arctan2(yy - cy, xx - cx)
    rad = np.full_like(ang, r)
    for k in (2, 3, 5):
        rad = rad * (1 + irregular * rng.uniform(-1, 1) * np.sin(k * ang + rng.uniform(0, 2 * math.pi)))
    return (np.hypot(yy - cy, xx - cx) <= rad)


def _rect(cx, cy, w, h, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return (np.abs(xx - cx) <= w / 2) & (np.abs(yy - cy) <= h / 2)


def _crack(rng, width: float, size: int = SIZE) -> np.ndarray:
    """A wandering polyline (a random walk with a slowly turning heading) thickened to ``width``."""
    yy, xx = np.mgrid[0:size, 0:size]
    x, y = rng.uniform(10, size - 10, 2)
    heading = rng.uniform(0, 2 * math.pi)
    dist = np.full((size, size), np.inf)
    for _ in range(int(rng.integers(8, 14))):
        heading += rng.normal(0, 0.5)
        nx, ny = np.clip(x + 4 * math.cos(heading), 2, size - 3), np.clip(y + 4 * math.sin(heading), 2, size - 3)
        # distance of every pixel to the segment (x, y) -> (nx, ny)
        dx, dy = nx - x, ny - y
        t = np.clip(((xx - x) * dx + (yy - y) * dy) / max(dx * dx + dy * dy, 1e-6), 0, 1)
        dist = np.minimum(dist, np.hypot(xx - (x + t * dx), yy - (y + t * dy)))
        x, y = nx, ny
    return dist <= width / 2


def _texture(rng, base, amp, cells) -> np.ndarray:
    n = np.stack([_noise(rng, cells) for _ in range(3)], -1)
    return np.clip(np.asarray(base)[None, None, :] + amp * (n - 0.5), 0, 255)


def make_image(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """One image (H, W, 3 uint8) and its instance masks (bool)."""
    masks: list[np.ndarray] = []
    if kind == "shapes":
        img = _texture(rng, rng.uniform(40, 215, 3), 60, 6)
        for _ in range(rng.integers(1, 4)):
            cx, cy = rng.uniform(12, 52, 2)
            m = _blob(rng, cx, cy, rng.uniform(5, 13), 0.0) if rng.random() < 0.5 else _rect(cx, cy, *rng.uniform(8, 24, 2))
            img[m] = rng.uniform(0, 255, 3)
            masks = [o & ~m for o in masks]  # the new shape occludes the earlier ones
            masks = [o for o in masks if o.sum() >= 12] + [m]
    elif kind == "camouflage":
        base = rng.uniform(60, 190, 3)
        img = _texture(rng, base, 110, 10)
        cx, cy = rng.uniform(18, 46, 2)
        m = _blob(rng, cx, cy, rng.uniform(9, 16), 0.15)
        obj = _texture(rng, base + rng.uniform(-25, 25, 3), 110, 10)
        img[m] = obj[m]
        masks.append(m)
    elif kind == "polyp":
        img = _texture(rng, (170, 70, 70), 70, 8)
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(14, 50, 2)
            r = rng.uniform(6, 13)
            m = _blob(rng, cx, cy, r, 0.05)
            yy, xx = np.mgrid[0:SIZE, 0:SIZE]
            glow = np.clip(1.2 - np.hypot(yy - cy, xx - cx) / r, 0, 1)[..., None]
            img = np.where(m[..., None], np.clip(img + 70 * glow + np.array([30, 40, 30]), 0, 255), img)
            masks.append(m)
    elif kind == "skin":
        img = _texture(rng, (215, 165, 135), 40, 5)
        cx, cy = rng.uniform(18, 46, 2)
        m = _blob(rng, cx, cy, rng.uniform(8, 16), 0.25)
        img[m] = np.clip(_texture(rng, (90, 55, 35), 50, 6)[m], 0, 255)
        masks.append(m)
    elif kind == "leaf":
        img = _texture(rng, (120, 120, 120), 40, 4)
        leaf = _blob(rng, 32, 32, rng.uniform(22, 28), 0.08)
        img[leaf] = _texture(rng, (60, 150, 50), 50, 6)[leaf]
        for _ in range(rng.integers(3, 7)):
            for _try in range(20):
                cx, cy = rng.uniform(10, 54, 2)
                m = _blob(rng, cx, cy, rng.uniform(2.5, 5), 0.2) & leaf
                if m.sum() >= 12 and not any((m & o).any() for o in masks):
                    img[m] = rng.uniform((110, 60, 20), (150, 90, 40))
                    masks.append(m)
                    break
    elif kind == "crack":
        img = _texture(rng, rng.uniform(130, 175) * np.ones(3), 50, 12)
        for _ in range(rng.integers(1, 3)):
            for _try in range(20):
                m = _crack(rng, rng.uniform(1.5, 2.6))
                if m.sum() >= 20 and not any((m & o).any() for o in masks):
                    img[m] = np.clip(img[m] * rng.uniform(0.25, 0.45), 0, 255)
                    masks.append(m)
                    break
    else:
        raise ValueError(f"sam synthetic: unknown kind {kind!r} (known: {KINDS})")
    return img.astype(np.uint8), masks


def write_dataset(kind: str, n_images: int, seed: int, out_dir: Path) -> Path:
    """Images under ``out_dir/images``, annotations in ``out_dir/annotations.json``; returns the json."""
    from PIL import Image  # optional: the 'sam' extra
    from pycocotools import mask as mask_utils  # optional: the 'sam' extra

    rng = np.random.default_rng([seed, KINDS.index(kind)])
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n_images):
        img, masks = make_image(kind, rng)
        name = f"{kind}_{i:05d}.png"
        Image.fromarray(img).save(out_dir / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE})
        for m in masks:
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                         "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                         "area": float(mask_utils.area(rle)), "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    path = out_dir / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": kind}]}))
    return path
