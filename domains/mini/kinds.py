"""Experts trained on part of their family's kinds: the mini world's ``expert_kinds`` knob.

Why: the paper's experts were fine-tuned on training sets narrower than, and different from, the
benchmarks they are scored on, and the paper's mean merge *beats* two of them on their own benchmark
(MBPP 72.9 vs 70.4, OS 42.6 vs 30.4). In a world whose experts are fine-tuned on every kind of question
their family asks, no merge beats an expert on its own family (world Q: ``leaderboards/mini/full-seed0``),
so CycleQD's archives can never hold a child above the experts. With ``expert_kinds`` f (a fraction, or
one per family) an expert's training set keeps the gold trajectories of a seeded ``round(f * K)`` of its
family's K question kinds (at least one); the eval sets are unchanged, so the expert is scored on kinds
it never trained on. A full fine-tune there can trade the base's partial skill on the unseen kinds for the
seen ones (it learns the protocol and the seen templates); a third of its task vector (the mean merge's
share) keeps the protocol and little of the template choice (``mini_replies``), so the merge may keep
more of the base on the unseen kinds. Whether it does is measured by the regime trial, not assumed.
The all-data fine-tune sees the union of the experts' training sets: the same examples per family.

A trajectory's kind is read from its question's wording (every kind has its own), so the recorded
trajectories of a world without the knob are reused as they are.
"""

from __future__ import annotations

import random
import re

from domains.mini import families as F
from domains.mini.drift import PROMPT_PREFIX


def _code_pattern(instruction: str) -> re.Pattern:
    return re.compile("Write a function to " + re.escape(instruction).replace(re.escape("{k}"), r"-?\d+") + r"\.")


# the question's wording of each kind (a family's kinds are told apart by it; checked below and in the tests)
QUESTION: dict[str, dict[str, re.Pattern]] = {
    "code": {kind: _code_pattern(t[0]) for kind, t in F.CODE_TEMPLATES.items()},
    "os": {"files": re.compile(r"^How many files are in \S+\?$"),
           "ext": re.compile(r"^How many \.log files are in \S+\?$"),
           "lines": re.compile(r"^How many lines does \S+ have\?$"),
           "grep": re.compile(r"^How many lines of \S+ contain the word \w+\?$"),
           "head": re.compile(r"^What is the first word of \S+\?$")},
    "db": {"lookup": re.compile(r"^What is the price of \w+\?"),
           "city": re.compile(r"^What is the city of \w+\?"),
           "count": re.compile(r"^How many rows have the city \w+\?"),
           "insert": re.compile(r"^Insert a row with name "),
           "update": re.compile(r"^Set the price of \w+ to "),
           "delete": re.compile(r"^Delete the row of \w+\.")},
}
assert set(QUESTION["os"]) == set(F.OS_KINDS) and set(QUESTION["db"]) == set(F.DB_KINDS) == set(F.DB_SQL)

_OS_QUESTION = re.compile(r"My problem is:\n\n(.*)$", re.DOTALL)


def kinds_of(family: str) -> list[str]:
    return sorted(QUESTION[family])


def question_of(family: str, conv: list[dict]) -> str:
    """The sample's question: the first user turn after the prompt's fixed turns (OS: after its preamble)."""
    text = next((m["content"] for m in conv[PROMPT_PREFIX[family]:] if m["role"] == "user"), "")
    if family == "os":
        m = _OS_QUESTION.search(text)
        text = m.group(1).strip() if m else text
    return text


def kind_of(family: str, conv: list[dict]) -> str:
    """The kind of a recorded conversation, from its question; a question no kind matches (or two do) raises."""
    q = question_of(family, conv)
    hits = [k for k, p in QUESTION[family].items() if p.search(q)]
    if len(hits) != 1:
        raise ValueError(f"mini-{family}: cannot tell the kind of question {q[:120]!r} (matches: {hits})")
    return hits[0]


def chosen_kinds(family: str, fraction: float, seed: int) -> list[str]:
    """The kinds an expert of ``family`` trains on: a seeded ``round(fraction * K)`` of them, at least one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"expert_kinds for {family} must be in (0, 1], got {fraction}")
    kinds = kinds_of(family)
    n = max(1, int(round(fraction * len(kinds))))
    return sorted(random.Random(f"expert_kinds:{family}:{seed}").sample(kinds, n))


def keep_kinds(family: str, convs: list[list[dict]], kinds: list[str]) -> list[list[dict]]:
    """The conversations whose question is of one of ``kinds`` (in their order)."""
    keep = set(kinds)
    return [c for c in convs if kind_of(family, c) in keep]
