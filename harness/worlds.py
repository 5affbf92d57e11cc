"""Model-world builders: functions that write a base and experts as HF directories.

A builder is registered by name (``@register_builder("vector_world")`` in its domain module, listed in
``harness.registry.WORLD_BUILDERS``) and returns ``{"base": path, <expert name>: path, ...}`` (plus
``"data_root"`` when it ships its own datasets). Builders must be deterministic in their params and
idempotent, so a resumed run rebuilds nothing it does not need.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.errors import ConfigError
from harness.registry import WORLD_BUILDERS


def publish_stage(path: Path, make: Callable[[Path], None]) -> Path:
    """A cached build stage: run ``make(tmp)`` into a temporary sibling directory unless ``path`` exists,
    then rename it into place, so a killed build never leaves a half-written stage behind."""
    if path.exists():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    os.replace(tmp, path)
    return path


def register_builder(name: str):
    """Decorator: make a builder function available as ``model.builder.kind: name``."""
    return WORLD_BUILDERS.register(name)


def build_world(kind: str, out_dir: Path, params: Mapping[str, Any]) -> dict[str, Path]:
    """``kind``: a registered name or ``module.path:function`` for a builder outside this repository."""
    fn = WORLD_BUILDERS.get(kind)
    try:
        paths = fn(out_dir, **dict(params))
    except TypeError as exc:
        raise ConfigError(f"model.builder.params: {exc}") from None
    return {k: Path(v) for k, v in paths.items()}
