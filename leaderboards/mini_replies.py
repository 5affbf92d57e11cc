"""What a mini-world model says: greedy replies of ``base + s * (expert - base)``, turn by turn, judged.

The regime report says *how much* of an expert's gain a merge keeps; this shows *what* is lost, which is
what decides whether a world can ever hold the paper's regime. It runs the first N eval instances of one
family through the real domain (sandbox, shell or SQL server, and judge) for each scale S of that family's
task vector (0: the base, 1: the expert, 1/3: what the mean merge gives it), and prints, per instance, the
gold action and each model's replies with the judge's verdict::

    python -m leaderboards.mini_replies code --scale 0 0.3333 1 --n 12 [--world JSON] [--json]

The world is the default one, or the recipe ``--world`` names (built if missing, as ``cycleqd mini`` does).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file

from domains.mini import families as F
from domains.mini.world import FAMILY_DOMAIN, ensure_world, task_params
from harness.domain import DomainContext, build_domain
from harness.episodes import Agent
from harness.errors import ConfigError, HarnessError
from leaderboards.mini_tables import world_overrides


class _Recorder(Agent):
    """Passes requests to the model's agent and keeps each sample's replies in turn order."""

    def __init__(self, inner: Agent):
        self.inner, self.replies = inner, {}

    def respond(self, requests):
        out = self.inner.respond(requests)
        for req, rep in zip(requests, out):
            self.replies.setdefault(req.sample_id, []).append(rep)
        return out


def task_vector(base: Path, expert: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The base's tensors and ``expert - base``, in float32, read once for every scale."""
    b, e = load_file(str(base / "model.safetensors")), load_file(str(expert / "model.safetensors"))
    if set(b) != set(e):
        raise ConfigError(f"{expert}: its tensors differ from the base's ({sorted(set(b) ^ set(e))[:3]})")
    b = {k: v.float() for k, v in b.items()}
    return b, {k: e[k].float() - b[k] for k in b}


def scaled_state(base: dict[str, torch.Tensor], tau: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """``base + scale * tau`` (the mean merge gives each expert scale 1/3)."""
    return {k: base[k] + scale * tau[k] for k in base}


def gold_action(family: str, sample: dict) -> str:
    return {"code": lambda s: s["canonical_solution"].strip(), "os": lambda s: s["example_script"][1],
            "db": lambda s: s["sql"]["query"]}[family](sample)


def replies(family: str, scales: Sequence[float], n: int, world: dict | None = None,
            progress: bool = False) -> list[dict]:
    """Per instance: its question, the gold action and, per scale, the replies and the judge's verdict."""
    if family not in F.FAMILIES:
        raise ConfigError(f"unknown mini family {family!r} (known: {sorted(F.FAMILIES)})")
    labels = [f"{s:g}" for s in scales]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--scale: each scale once, got {list(scales)}")
    w = ensure_world(progress=progress, **(world or {}))
    ctx = DomainContext(run_dir=None, seed=0, data_root=w["data_root"], base_dir=w["base"])
    dom = build_domain(FAMILY_DOMAIN[family], task=f"mini-{family}", ctx=ctx,
                       params=task_params(family, f"{family}_eval.jsonl"))
    dom.setup()
    try:
        samples = dom.samples()[:n]
        rows = [{"question": " ".join(filter(None, (s.get("description") or s.get("prompt"), s.get("add_description")))),
                 "gold": gold_action(family, s), "models": {}} for s in samples]
        base, tau = task_vector(w["base"], w[family])
        for scale, label in zip(scales, labels):
            rec = _Recorder(dom.agent(scaled_state(base, tau, scale)))
            res = dom.run(rec, list(range(len(samples))))
            for row, r in zip(rows, res.samples):
                row["models"][label] = {"replies": rec.replies.get(r.sample_id, []), "score": r.score,
                                               "status": r.status.value}
        return rows
    finally:
        dom.close()


def _short(text: str, width: int = 110) -> str:
    one = text.replace("\n", " | ")
    return one if len(one) <= width else one[: width - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leaderboards.mini_replies", description=__doc__.split("\n")[0])
    ap.add_argument("family", choices=sorted(F.FAMILIES))
    ap.add_argument("--scale", type=float, nargs="+", default=[0.0, 1 / 3, 1.0],
                    help="scales of the family's task vector (0: base, 1: expert)")
    ap.add_argument("--n", type=int, default=10, help="eval instances, from the first")
    ap.add_argument("--world", default=None, help="the world's recipe changes, as for cycleqd mini --world")
    ap.add_argument("--json", action="store_true", help="print one JSON object per instance")
    a = ap.parse_args(argv)
    try:
        rows = replies(a.family, a.scale, a.n, world_overrides(a.world or ""), progress=True)
    except HarnessError as exc:  # ConfigError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for row in rows:
        if a.json:
            print(json.dumps(row))
            continue
        print(f"Q: {_short(row['question'])}\n   gold: {_short(row['gold'])}")
        for scale, m in row["models"].items():
            print(f"   s={float(scale):<5.3g} {m['status']:<14} " + "  //  ".join(_short(r, 100) for r in m["replies"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
