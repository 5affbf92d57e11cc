"""SAM models from the ``segment-anything`` package's own module classes, on any device.

``import segment_anything`` runs the package ``__init__``, which imports the predictor and so
torchvision; torchvision's PyPI wheels link CUDA and cannot be installed beside the CPU torch (machine
notes). Only ``segment_anything.modeling`` is needed to build and train models, so the package is
registered as a bare module (its ``__path__`` only) and the submodule is imported from it.

``build_sam(variant)``: the registry variants (``vit_b`` / ``vit_l`` / ``vit_h``, the paper's sizes,
1024-pixel inputs) with an optional checkpoint loaded with an explicit ``map_location``, or ``tiny``: the
same ImageEncoderViT, PromptEncoder, MaskDecoder and TwoWayTransformer classes at a CPU size.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import torch

from harness.errors import CheckpointError, ConfigError
from harness.merging.safetensors_io import save_state_dict

VARIANTS = {
    "vit_b": {"img_size": 1024, "patch_size": 16, "embed_dim": 768, "depth": 12, "heads": 12,
              "global_attn": (2, 5, 8, 11), "window_size": 14, "prompt_dim": 256, "decoder_heads": 8, "decoder_mlp": 2048},
    "vit_l": {"img_size": 1024, "patch_size": 16, "embed_dim": 1024, "depth": 24, "heads": 16,
              "global_attn": (5, 11, 17, 23), "window_size": 14, "prompt_dim": 256, "decoder_heads": 8, "decoder_mlp": 2048},
    "vit_h": {"img_size": 1024, "patch_size": 16, "embed_dim": 1280, "depth": 32, "heads": 16,
              "global_attn": (7, 15, 23, 31), "window_size": 14, "prompt_dim": 256, "decoder_heads": 8, "decoder_mlp": 2048},
    "tiny": {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 2, "heads": 2, "global_attn": (),
             "window_size": 0, "prompt_dim": 64, "decoder_heads": 2, "decoder_mlp": 256},
}


def sam_modeling():
    """``segment_anything.modeling`` without the package ``__init__`` (no torchvision needed)."""
    if "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("sam: the segment-anything package is not installed (pip install -e '.[sam]')")
    if "segment_anything" not in sys.modules:
        pkg = types.ModuleType("segment_anything")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["segment_anything"] = pkg
    return importlib.import_module("segment_anything.modeling")


def build_sam(variant: str = "tiny", checkpoint: str | None = None, map_location: str = "cpu", **overrides):
    if variant not in VARIANTS:
        raise ConfigError(f"sam: unknown variant {variant!r} (known: {sorted(VARIANTS)})")
    unknown = set(overrides) - set(VARIANTS[variant])
    if unknown:
        raise ConfigError(f"sam: unknown model parameter {sorted(unknown)[0]!r} (known: {sorted(VARIANTS[variant])})")
    c = {**VARIANTS[variant], **overrides}
    M = sam_modeling()
    emb = c["img_size"] // c["patch_size"]
    sam = M.Sam(
        image_encoder=M.ImageEncoderViT(
            depth=c["depth"], embed_dim=c["embed_dim"], img_size=c["img_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c["heads"], patch_size=c["patch_size"],
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=tuple(c["global_attn"]),
            window_size=c["window_size"], out_chans=c["prompt_dim"]),
        prompt_encoder=M.PromptEncoder(embed_dim=c["prompt_dim"], image_embedding_size=(emb, emb),
                                       input_image_size=(c["img_size"], c["img_size"]), mask_in_chans=16),
        mask_decoder=M.MaskDecoder(
            num_multimask_outputs=3,
            transformer=M.TwoWayTransformer(depth=2, embedding_dim=c["prompt_dim"], mlp_dim=c["decoder_mlp"],
                                            num_heads=c["decoder_heads"]),
            transformer_dim=c["prompt_dim"], iou_head_depth=3, iou_head_hidden_dim=c["prompt_dim"]),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise CheckpointError(f"sam: checkpoint {path} does not exist")
        try:
            sd = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - one line naming the file
            raise CheckpointError(f"sam: {path} is not a loadable state dict ({type(exc).__name__}: {exc})") from None
        missing, unexpected = sam.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"sam: {path} does not fit {variant}: missing {missing[:2]}, unexpected {unexpected[:2]}")
    sam.eval()
    return sam


def predict_masks(sam, images: torch.Tensor, boxes: list[torch.Tensor] | None = None,
                  points: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> list[torch.Tensor]:
    """Mask logits at image resolution, one (n_i, H, W) tensor per image, for n_i prompts (boxes XYXY in
    pixels, or (coords, labels) points). Differentiable (``Sam.forward`` is under no_grad)."""
    x = torch.stack([sam.preprocess(im) for im in images])
    emb = sam.image_encoder(x)
    pe = sam.prompt_encoder.get_dense_pe()
    out = []
    for i in range(len(images)):
        if points is not None:
            sp, de = sam.prompt_encoder(points=points[i], boxes=None, masks=None)
        else:
            sp, de = sam.prompt_encoder(points=None, boxes=boxes[i], masks=None)
        low, _ = sam.mask_decoder(image_embeddings=emb[i : i + 1], image_pe=pe, sparse_prompt_embeddings=sp,
                                  dense_prompt_embeddings=de, multimask_output=False)
        size = sam.image_encoder.img_size
        out.append(torch.nn.functional.interpolate(low, (size, size), mode="bilinear", align_corners=False)[:, 0])
    return out


def convert_checkpoint(checkpoint: str | Path, out_dir: str | Path, variant: str = "vit_h") -> Path:
    """A SAM ``.pth`` (state dict) -> ``out_dir/model.safetensors``, the directory form the model store,
    the merges and the runner read. Checked by building the variant with it first."""
    sam = build_sam(variant, checkpoint=checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(out / "model.safetensors", {k: v.contiguous() for k, v in sam.state_dict().items()})
    (out / "sam.json").write_text(f'{{"variant": "{variant}"}}\n')
    return out


if __name__ == "__main__":  # python -m domains.sam.modeling CHECKPOINT.pth OUT_DIR [VARIANT]
    import sys as _sys

    if len(_sys.argv) not in (3, 4):
        raise SystemExit("usage: python -m domains.sam.modeling CHECKPOINT.pth OUT_DIR [vit_b|vit_l|vit_h]")
    print(convert_checkpoint(_sys.argv[1], _sys.argv[2], *(_sys.argv[3:] or ["vit_h"])))
