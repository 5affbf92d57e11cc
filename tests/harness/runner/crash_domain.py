"""A vector-world task whose worker process dies the first ``crash_times`` times it scores (never in the
process that built the config): a stand-in for an OOM kill or a native crash, for the executors' tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

from domains.vector_world import VectorWorldDomain


class CrashingVectorWorld(VectorWorldDomain):
    @dataclass
    class Params(VectorWorldDomain.Params):
        crash_flag: str = ""  # a file counting the crashes so far (one line each)
        crash_times: int = 1
        parent_pid: int = 0  # never crash in this process

    def _maybe_die(self) -> None:
        p = self.params
        if not p.crash_flag or os.getpid() == p.parent_pid:
            return
        n = len(open(p.crash_flag).read().splitlines()) if os.path.exists(p.crash_flag) else 0
        if n < p.crash_times:
            with open(p.crash_flag, "a") as fh:
                fh.write(f"{os.getpid()}\n")
            os._exit(137)

    def evaluate(self, state_dict, *, split):
        self._maybe_die()
        return super().evaluate(state_dict, split=split)
