"""``module.path:name`` references: how configs name plugins (domains, world builders) that live
outside this repository."""

from __future__ import annotations

import importlib

from harness.errors import ConfigError


def load_ref(ref: str, config_key: str):
    """The object ``name`` of module ``module.path``; a one-line ConfigError naming ``config_key``."""
    mod, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{config_key}: cannot load {ref!r} ({exc})") from None
