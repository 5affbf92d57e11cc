"""Sandboxes for untrusted model actions: ``local`` (bubblewrap + cgroups) and ``docker``."""

from envs.sandbox.base import ExecResult, ExecStatus, Limits

__all__ = ["ExecResult", "ExecStatus", "Limits"]
