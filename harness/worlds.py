"""Model-world builders: functions that write a base and experts as HF directories.

A builder is registered by name (``@register_builder("vector_world")``) in its domain module and returns
``{"base": path, <expert name>: path, ...}``. Builders must be deterministic in their params and
idempotent, so a resumed run rebuilds nothing it does not need.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping

from harness.errors import ConfigError

_BUILDERS: dict[str, Callable[..., Mapping[str, Path]]] = {}


def publish_stage(path: Path, make: Callable[[Path], None]) -> Path:
    """A cached build stage: run ``make(tmp)`` into a temporary sibling directory unless ``path`` exists,
    then rename it into place, so a killed build never leaves a half-written stage behind."""
    import os
    import shutil

    if path.exists():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    make(tmp)
    os.replace(tmp, path)
    return path


def register_builder(name: str):
    def deco(fn):
        _BUILDERS[name] = fn
        return fn

    return deco


def build_world(kind: str, out_dir: Path, params: Mapping[str, Any]) -> dict[str, Path]:
    """``kind``: a registered name (its module ``domains.<kind>`` is imported on demand) or
    ``module.path:function`` for a builder outside this repository."""
    if ":" in kind:
        from harness.refs import load_ref

        fn = load_ref(kind, "model.builder.kind")
    else:
        fn = _registered(kind)
    try:
        paths = fn(out_dir, **dict(params))
    except TypeError as exc:
        raise ConfigError(f"model.builder.params: {exc}") from None
    return {k: Path(v) for k, v in paths.items()}


def _registered(kind: str) -> Callable[..., Mapping[str, Path]]:
    if kind not in _BUILDERS:
        try:
            importlib.import_module(f"domains.{kind}")
        except ModuleNotFoundError:
            pass
    if kind not in _BUILDERS:
        raise ConfigError(f"model.builder.kind: unknown builder {kind!r} (known: {sorted(_BUILDERS)})")
    return _BUILDERS[kind]
