"""Errors the harness raises for bad input.

Every error carries a one-line message that names the culprit (a config key, a file, a tensor name), so
a user sees what to fix instead of a traceback deep inside torch.
"""


class HarnessError(Exception):
    """Base class: something the user supplied (config, data, checkpoint) is wrong."""


class ConfigError(HarnessError):
    """A config key is unknown, missing or has a bad value."""


class CheckpointError(HarnessError):
    """A model directory or safetensors file is missing, corrupt or incompatible."""


class NonFiniteError(HarnessError):
    """A materialised model contains NaN or Inf values."""
