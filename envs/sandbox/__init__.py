"""Sandboxes for untrusted model actions: code sandboxes (``bubblewrap``/``local``, ``docker``) and OS
episode shells (``rootfs``/``local``, ``docker``), found by name through ``harness.registry``."""

from envs.sandbox.base import CodeSandbox, EpisodeShell, ExecResult, ExecStatus, Limits, ShellOutput

__all__ = ["CodeSandbox", "EpisodeShell", "ExecResult", "ExecStatus", "Limits", "ShellOutput"]
