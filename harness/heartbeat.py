"""Signs of life during long evaluations: what is being scored, how far it got, every ``interval`` seconds.

Why: at paper scale one child's evaluation takes many minutes (an 8B model over hundreds of agent episodes)
and domains run with their progress bars off inside workers, so a run log could stay silent for an hour.
The evaluator tells a ``Heartbeat`` what it is doing (``begin`` a model, ``at`` a task and how many of its
instances are done); a daemon thread logs the latest state through ``logging`` (logger ``cycleqd``) at least
every ``interval`` seconds while an evaluation is in progress, and nothing while idle.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("cycleqd")


class Heartbeat:
    def __init__(self, interval: float = 30.0, logger: logging.Logger = log):
        if interval <= 0:
            raise ValueError(f"heartbeat interval must be > 0, got {interval}")
        self.interval = float(interval)
        self.log = logger
        self._lock = threading.Lock()
        self._what: str | None = None
        self._task: str | None = None
        self._done = self._total = 0
        self._t0 = 0.0
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._beat, name="cycleqd-heartbeat", daemon=True)
        self._thread.start()

    def begin(self, what: str) -> None:
        """A new evaluation starts (``what``: model id and split)."""
        with self._lock:
            self._what, self._task, self._done, self._total, self._t0 = what, None, 0, 0, time.monotonic()
        self._wake.set()

    def at(self, task: str, done: int, total: int) -> None:
        """Progress within the current evaluation: ``done`` of ``total`` instances of ``task``."""
        with self._lock:
            self._task, self._done, self._total = task, int(done), int(total)
        self.log.debug("%s: %s %d/%d", self._what, task, done, total)

    def end(self) -> None:
        with self._lock:
            self._what = None

    def line(self) -> str | None:
        """The line a beat would log now (None while idle)."""
        with self._lock:
            if self._what is None:
                return None
            where = f"{self._task} {self._done}/{self._total} instances" if self._task else "starting"
            return f"still evaluating {self._what}: {where}, {time.monotonic() - self._t0:.0f} s elapsed"

    def _beat(self) -> None:
        while not self._stop:
            self._wake.wait()
            self._wake.clear()
            while not self._stop and not self._wake.wait(self.interval):
                text = self.line()
                if text is None:
                    break
                self.log.info(text)

    def close(self) -> None:
        self._stop = True
        self._wake.set()
