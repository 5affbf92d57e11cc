"""The leaderboard interface the CLI runs by name (``cycleqd leaderboard NAME``).

A leaderboard is a definition (which methods on which tasks, in which variants) with a ``run`` that
writes its report into a directory and a ``compare`` that checks a report against a committed reference.
Definitions live in ``leaderboards/`` and are listed in ``harness.registry.LEADERBOARDS``; the core only
knows this interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Leaderboard:
    """``run(variant, seed, out_dir, progress, **options) -> report`` (a JSON-able dict holding
    ``out_dir``); ``summary_file``: the file of ``out_dir`` printed after a run; ``compare(report,
    reference) -> [differences]``; ``options``: extra CLI options, name -> (choices, default, help)."""

    name: str
    description: str
    run: Callable[..., dict]
    compare: Callable[[dict, dict], list[str]]
    summary_file: str
    options: dict[str, tuple[tuple[str, ...], str, str]] = field(default_factory=dict)
