"""SAM adapter pieces: models from the package classes, checkpoints, COCO data, metrics."""

import json

import numpy as np
import pytest
import torch

from domains.sam.modeling import sam_modeling  # noqa: E402
from harness.errors import ConfigError as _ConfigError  # noqa: E402

try:
    sam_modeling()  # segment_anything.modeling without the package __init__ (no torchvision)
except _ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)
pytest.importorskip("pycocotools")

from domains.sam.coco import CocoSegmentation, coco_ap, mask_iou, to_original  # noqa: E402
from domains.sam.modeling import build_sam, convert_checkpoint, predict_masks  # noqa: E402
from domains.sam.synthetic import KINDS, write_dataset  # noqa: E402
from harness.errors import CheckpointError, ConfigError, HarnessError  # noqa: E402
from leaderboards.sam_table4 import box_baseline, pearson, task_vector_similarity  # noqa: E402


def test_tiny_sam_trains_through_box_prompts():
    torch.manual_seed(0)
    sam = build_sam("tiny")
    sam.train()
    img = torch.rand(3, 64, 64) * 255
    out = predict_masks(sam, [img], boxes=[torch.tensor([[8.0, 8.0, 40.0, 40.0], [0.0, 0.0, 20.0, 30.0]])])
    assert out[0].shape == (2, 64, 64)
    out[0].mean().backward()  # Sam.forward is no_grad; our path must not be
    assert sam.mask_decoder.output_upscaling[0].weight.grad is not None


def test_checkpoints_load_on_cpu_and_convert(tmp_path):
    sam = build_sam("tiny")
    torch.save(sam.state_dict(), tmp_path / "tiny.pth")
    again = build_sam("tiny", checkpoint=str(tmp_path / "tiny.pth"))
    assert all(torch.equal(a, b) for a, b in zip(sam.state_dict().values(), again.state_dict().values()))
    out = convert_checkpoint(tmp_path / "tiny.pth", tmp_path / "dir", "tiny")
    assert (out / "model.safetensors").exists()
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sam("tiny", checkpoint=str(tmp_path / "missing.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        build_sam("tiny", checkpoint=str(tmp_path / "junk.pth"))
    with pytest.raises(ConfigError, match="unknown variant"):
        build_sam("vit_x")


def test_registry_variant_builds_with_the_paper_sizes():
    sam = build_sam("vit_b")
    assert sam.image_encoder.img_size == 1024 and len(sam.image_encoder.blocks) == 12
    assert sam.prompt_encoder.embed_dim == 256


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("coco")
    write_dataset("polyp", 6, 0, d)
    return CocoSegmentation(d / "annotations.json", img_size=64)


def test_synthetic_kinds_make_instances():
    from domains.sam.synthetic import make_image

    rng = np.random.default_rng(0)
    for k in KINDS:
        img, masks = make_image(k, rng)
        assert img.shape == (64, 64, 3) and masks and all(m.sum() > 0 for m in masks)


def test_coco_loading_prompts_and_perfect_predictions(dataset):
    it = dataset.item(0)
    assert it["masks"].shape[1:] == (64, 64) and len(it["boxes"]) == len(it["masks"])
    x0, y0, x1, y1 = it["boxes"][0].tolist()
    ys, xs = torch.nonzero(it["masks"][0], as_tuple=True)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    assert bool(it["masks"][0][int(it["points"][0, 0, 1]), int(it["points"][0, 0, 0])])  # the point is inside
    assert mask_iou(it["masks"], it["masks"]).tolist() == [1.0] * len(it["masks"])
    preds = [{"image_id": dataset.item(i)["image_id"], "mask": m, "score": 1.0}
             for i in range(len(dataset)) for m in dataset.item(i)["masks"]]
    assert coco_ap(dataset, preds) == pytest.approx(1.0)


def test_polygons_and_resizing(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 100, "width": 200}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 30], "area": 1200,
                             "segmentation": [[20, 10, 60, 10, 60, 40, 20, 40]]}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = CocoSegmentation(tmp_path / "ann.json", tmp_path, img_size=64)
    it = ds.item(0)
    assert it["image"].shape == (3, 32, 64) and it["masks"].shape == (1, 100, 200)
    assert it["boxes"][0].tolist() == pytest.approx([6.4, 3.2, 19.2, 12.8])
    logits = torch.full((1, 64, 64), -1.0)
    logits[0, 3:13, 6:19] = 1.0  # the box, in the resized frame
    back = to_original(logits, it) > 0
    assert back.shape == (1, 100, 200) and mask_iou(back, it["masks"]).item() > 0.8


def test_bad_coco_input_is_named(tmp_path):
    with pytest.raises(HarnessError, match="does not exist"):
        CocoSegmentation(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HarnessError, match="bad.json: not valid JSON"):
        CocoSegmentation(tmp_path / "bad.json")
    (tmp_path / "x.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.png", "height": 4, "width": 4}],
                                                  "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                                   "bbox": [0, 0, 2, 2], "area": 4,
                                                                   "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]}]}))
    with pytest.raises(HarnessError, match="gone.png"):
        CocoSegmentation(tmp_path / "x.json").item(0)


def test_similarity_is_scale_free_and_pearson_skips_undefined():
    g = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(8, 6, generator=g), "norm": torch.ones(6)}
    tau = torch.randn(8, 6, generator=g)
    a = {"w": base["w"] + tau, "norm": base["norm"] + 1}
    b = {"w": base["w"] + 3 * tau, "norm": base["norm"]}
    assert task_vector_similarity(base, a, b) == pytest.approx(1.0)
    c = {"w": base["w"] + torch.outer(torch.ones(8), torch.ones(6)), "norm": base["norm"]}  # rank 1
    assert task_vector_similarity(base, a, c) < 0.99
    assert pearson([1, 2, 3, None], [2, 4, 6, 1]) == pytest.approx(1.0) and pearson([1, None], [1, 2]) is None


class _Dom:
    def __init__(self, ds):
        self.ds = ds

    def split(self, name):
        return list(range(len(self.ds)))


def test_box_baseline_is_a_real_floor(dataset):
    v = box_baseline(_Dom(dataset), "test")
    assert 0.5 < v < 1.0  # round blobs fill pi/4 of their box
