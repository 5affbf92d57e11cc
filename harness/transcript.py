"""Recorded model replies, replayed as an agent: ``cycleqd replay DOMAIN --agent transcript:FILE``.

FILE is JSON lines, one object per sample: ``{"id": SAMPLE_ID, "replies": [REPLY, ...]}``, the id as the
domain names its samples (``os/0``, ``db/3``, an MBPP ``task_id``), one reply per agent turn (for coding:
the text after the "```python" prefill). It is how a saved model's outputs are judged without the model
(EvalPlus's ``evaluate --samples``). Turns past the list get the empty string (what a model that stopped
talking says); a sample without a line is an error naming it, so a partial file never scores as zeros.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from harness.episodes import Agent, ChatRequest
from harness.errors import HarnessError

PREFIX = "transcript:"


def load_transcript(path: str | Path) -> dict[str, list[str]]:
    """{sample id: replies}, with a one-line error naming file:line for anything malformed."""
    p = Path(path)
    if not p.is_file():
        raise HarnessError(f"transcript {p} does not exist")
    out: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    for n, raw in enumerate(p.read_bytes().split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HarnessError(f"{p}:{n}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise HarnessError(f"{p}:{n}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})") from None
        if not isinstance(row, dict):
            raise HarnessError(f"{p}:{n}: a line is a JSON object {{\"id\": ..., \"replies\": [...]}}, "
                               f"not a {type(row).__name__}")
        sid, replies = row.get("id"), row.get("replies")
        if not isinstance(sid, str):
            raise HarnessError(f"{p}:{n}: 'id' must be a string (a sample id such as os/0), not {str(sid)[:40]!r}")
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise HarnessError(f"{p}:{n}: 'replies' must be a list of strings")
        if sid in first:
            raise HarnessError(f"{p}:{n}: sample {sid!r} repeats line {first[sid]}")
        first[sid] = n
        out[sid] = replies
    return out


class TranscriptAgent(Agent):
    """Answers each request with the recorded reply of its sample and turn."""

    def __init__(self, replies: Mapping[str, Sequence[str]]):
        self.replies = replies

    def respond(self, requests: Sequence[ChatRequest]) -> list[str]:
        out = []
        for r in requests:
            if r.sample_id not in self.replies:
                raise HarnessError(f"transcript: no line for sample {r.sample_id!r}")
            rs = self.replies[r.sample_id]
            out.append(rs[r.turn] if r.turn < len(rs) else "")
        return out


def transcript_agent(path: str | Path, sample_ids: Sequence[str]) -> TranscriptAgent:
    """The agent of a transcript file, checked to hold a line for every sample of ``sample_ids``."""
    replies = load_transcript(path)
    missing = [s for s in sample_ids if s not in replies]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise HarnessError(f"{path}: no line for sample {missing[0]!r}{more}")
    return TranscriptAgent(replies)
