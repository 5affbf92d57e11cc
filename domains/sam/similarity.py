"""The paper's task-vector similarity (Table 4): the cosine of the singular-value vectors of two task
vectors, averaged over weight matrices. It lives with the SAM domain because both the Table 4 leaderboard
and the world's fine-tuning sweep (``domains/sam/sweep.py``) measure it, and a domain may not import a
leaderboard."""

from __future__ import annotations

from typing import Mapping

import torch


def task_vector_similarity(base: Mapping[str, torch.Tensor], a: Mapping[str, torch.Tensor],
                           b: Mapping[str, torch.Tensor]) -> float:
    """Mean cosine of the singular values of tau_A and tau_B over parameters that are matrices of rank
    > 1 (conv kernels flattened to out x rest); parameters where either task vector is zero are skipped."""
    cos = []
    for k, t in base.items():
        if t.dim() < 2 or min(t.shape[0], t[0].numel()) < 2:
            continue
        ta, tb = (a[k] - t).float().reshape(t.shape[0], -1), (b[k] - t).float().reshape(t.shape[0], -1)
        sa, sb = torch.linalg.svdvals(ta), torch.linalg.svdvals(tb)
        if sa.norm() == 0 or sb.norm() == 0:
            continue
        cos.append(float(torch.dot(sa, sb) / (sa.norm() * sb.norm())))
    return sum(cos) / len(cos) if cos else float("nan")
