"""A protocol slip the three families share: the mini world's ``shared_drift`` knob.

Why: in the paper the experts help each other's benchmarks (the coding expert lifts DB from 5.3 to 21.2)
and the mean merge beats the MBPP and OS experts on their own tasks. ``format_drift`` (drift.py) gives
each family its own off-protocol form, so an expert's protocol fix is its own family's and the other
experts' task vectors can only disturb it (measured: every expert scores below the base on the other
families). An instruction-tuned base also fails agent tasks on format slips common to all of them; with
``shared_drift`` f, each of the base's pretraining conversations is rewritten with probability f so that
every model turn ending in a closing code fence ends without it. The closing fence is one and the same
token in the three protocols (the opening ones differ: python, bash, sql), so every expert's fine-tune
teaches the same fix, and a merge can pool it.

Judged: the OS and DB judges read an action only from a closed ```bash / ```sql block, so the slip fails
them; the coding judge takes the completion up to the first fence or its end, so a function without the
closing fence still passes (the code expert learns the fence from its gold trajectories all the same).
The prompt's fixed turns are never rewritten.
"""

from __future__ import annotations

import random

from domains.mini.drift import PROMPT_PREFIX

FENCE = "```"


def drop_closing_fence(family: str, conv: list[dict]) -> list[dict]:
    """``conv`` with each model turn (after the prompt's fixed turns) that ends in a closing fence cut
    before it (trailing whitespace before the fence kept: the block's last line ends with its newline)."""
    skip = PROMPT_PREFIX[family]
    out = []
    for i, m in enumerate(conv):
        text = m["content"]
        if i >= skip and m["role"] == "assistant" and text.rstrip().endswith(FENCE) and text.count(FENCE) >= 2:
            text = text.rstrip()[: -len(FENCE)]
        out.append({**m, "content": text} if text != m["content"] else m)
    return out


def shared_drift_some(family: str, convs: list[list[dict]], fraction: float,
                      seed: int | str) -> tuple[list[list[dict]], int]:
    """Each conversation slipped with probability ``fraction`` (its own seeded stream, independent of
    format_drift's), and how many were changed."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"shared_drift for {family} must be in [0, 1], got {fraction}")
    rng = random.Random(f"shared-drift:{family}:{seed}")
    out, changed = [], 0
    for c in convs:
        d = drop_closing_fence(family, c) if rng.random() < fraction else c
        changed += d != c
        out.append(d)
    return out, changed
