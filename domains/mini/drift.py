"""Off-protocol replies for the base's pretraining: the mini world's ``format_drift`` knob.

Why: an expert's gain can be of two kinds. *Discrimination* (which template a question asks for) is an
input-dependent change of the logits; scaled by 1/3, as the mean merge scales each task vector, it moves
the base's default choice but no longer tells the questions apart (``python -m leaderboards.mini_replies``
shows it). A *protocol* gain (answer in the judge's format) is one input-independent shift, which a
fraction of the task vector may already make. Instruction-tuned bases such as the paper's may fail agent
benchmarks partly on format, so a world whose base often leaves the protocol puts part of each expert's
gain in the second kind.

With ``format_drift`` f (a number, or one per family), each of the base's pretraining conversations
(noise and gold alike, drawn with a seeded RNG) is rewritten with probability f into a variant that the
family's judge rejects although the action is the same. Only the model's own turns are rewritten, never
the prompt's fixed example turns (the OS one-shot, the DB "Ok."), which the model sees unchanged at eval:

* code: the task's function (the name the prompt's assertion calls) is named ``solution`` (the judge calls
  the task's name, so a right body under the wrong name fails, as a wrongly named MBPP function does);
* OS: the final answer is ``Answer: X`` instead of ``Act: answer(X)`` (no ``Act:`` line: invalid action);
* DB: the statement is fenced ```` ```SQL ```` instead of ```` ```sql ```` and the final answer is
  ``Answer: [...]`` instead of ``Final Answer: [...]`` (invalid action either way; the fence matters for
  INSERT / UPDATE / DELETE, which the judge scores by the table's md5 whatever the answer says).

Experts and the all-data fine-tune are trained on the official protocol only. The eval data and the judges
are unchanged.
"""

from __future__ import annotations

import random
import re

from domains.mini import families as F

# messages the domain writes before the sample's question: the model's turns come after them
PROMPT_PREFIX = {"code": 0, "os": len(F.OS_ONESHOT), "db": 2}
_ASSERT = re.compile(r"assert ([A-Za-z_][A-Za-z0-9_]*)\(")


def _code(text: str, question: str) -> str:
    name = _ASSERT.search(question)
    return re.sub(rf"def {re.escape(name.group(1))}\(", "def solution(", text, count=1) if name else text


def _os(text: str, question: str) -> str:
    return re.sub(r"Act: answer\((.*)\)\s*$", r"Answer: \1", text, flags=re.DOTALL)


def _db(text: str, question: str) -> str:
    return text.replace("```sql\n", "```SQL\n").replace("\nFinal Answer:", "\nAnswer:")


DRIFT = {"code": _code, "os": _os, "db": _db}


def drift_conversation(family: str, conv: list[dict]) -> list[dict]:
    """``conv`` with the model's replies (after the prompt's fixed turns) rewritten off the protocol."""
    fn, skip = DRIFT[family], PROMPT_PREFIX[family]
    question = next((m["content"] for m in conv[skip:] if m["role"] == "user"), "")
    return [{**m, "content": fn(m["content"], question)} if i >= skip and m["role"] == "assistant" else m
            for i, m in enumerate(conv)]


def drift_some(family: str, convs: list[list[dict]], fraction: float,
               seed: int | str) -> tuple[list[list[dict]], int]:
    """Each conversation drifted with probability ``fraction`` (seeded per family: same seed, same corpus),
    and how many were actually changed (a drawn conversation without the rewritten form stays as it is)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"format_drift for {family} must be in [0, 1], got {fraction}")
    rng = random.Random(f"drift:{family}:{seed}")
    out, changed = [], 0
    for c in convs:
        d = drift_conversation(family, c) if rng.random() < fraction else c
        changed += d != c
        out.append(d)
    return out, changed
