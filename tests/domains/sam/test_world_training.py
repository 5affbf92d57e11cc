"""The SAM world's fine-tuning knobs and its fifth task: what an expert may change, and thin crack masks."""

import numpy as np
import pytest
import torch

from domains.sam.modeling import sam_modeling
from harness.errors import ConfigError

try:
    sam_modeling()
except ConfigError as exc:
    pytest.skip(str(exc), allow_module_level=True)
pytest.importorskip("pycocotools")

from domains.sam.coco import CocoSegmentation  # noqa: E402
from domains.sam.modeling import build_sam  # noqa: E402
from domains.sam.synthetic import make_image, write_dataset  # noqa: E402
from domains.sam.world import TASKS, recipe, train_sam  # noqa: E402


@pytest.fixture(scope="module")
def crack_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("crack")
    write_dataset("crack", 4, 0, d)
    return CocoSegmentation(d / "annotations.json", img_size=64)


def _changed(before, model):
    return {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}


@pytest.mark.parametrize("modules, allowed", [("decoder", ("mask_decoder.",)),
                                               ("neck+decoder", ("image_encoder.neck.", "mask_decoder."))])
def test_train_modules_leave_the_rest_at_the_base(crack_data, modules, allowed):
    torch.manual_seed(0)
    model = build_sam("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_sam(model, [crack_data], steps=2, lr=1e-2, batch_size=2, warmup=0, seed=0, modules=modules)
    changed = _changed(before, model)
    assert changed and all(k.startswith(allowed) for k in changed)
    if modules == "neck+decoder":
        assert any(k.startswith("image_encoder.neck.") for k in changed)


def test_sgd_and_adamw_move_weights_differently(crack_data):
    """AdamW's first steps move every trained weight by about lr; SGD moves them by lr x gradient."""
    moved = {}
    for opt in ("adamw", "sgd"):
        torch.manual_seed(0)
        model = build_sam("tiny")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        train_sam(model, [crack_data], steps=1, lr=1e-3, batch_size=2, warmup=0, seed=0, modules="decoder",
                  optimizer=opt)
        w = "mask_decoder.output_upscaling.0.weight"
        moved[opt] = (model.state_dict()[w] - before[w]).abs()
    assert moved["adamw"].max() == pytest.approx(1e-3, rel=0.05)
    assert moved["sgd"].max() < 0.5e-3 and not torch.equal(moved["sgd"], moved["adamw"])
    with pytest.raises(ConfigError, match="optimizer"):
        train_sam(build_sam("tiny"), [crack_data], steps=1, lr=1e-3, batch_size=1, warmup=0, seed=0, optimizer="lion")


def test_recipe_checks_its_knobs():
    assert recipe(train_modules="neck+decoder")["train_modules"] == "neck+decoder"
    with pytest.raises(ConfigError, match="train_modules"):
        recipe(train_modules="encoder")
    assert len(TASKS) >= 5 and "crack" in TASKS


def test_cracks_are_thin_and_fill_little_of_their_box():
    rng = np.random.default_rng(1)
    fills = []
    for _ in range(10):
        img, masks = make_image("crack", rng)
        assert 1 <= len(masks) <= 2 and img.shape == (64, 64, 3)
        for m in masks:
            ys, xs = np.nonzero(m)
            fills.append(m.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
            interior = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            assert interior.sum() < 0.5 * m.sum()  # mostly edge: a line one to three pixels wide
    assert max(fills) < 0.5 and np.mean(fills) < 0.3  # a polyp or skin blob fills about pi/4 of its box
