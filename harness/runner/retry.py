"""How often a job is handed out again after its worker died, and what it returns when it keeps killing
workers: a rejection with the reason (a model must not be able to stop a run), never a crash."""

import logging

log = logging.getLogger("cycleqd")

MAX_ATTEMPTS = 3


def died(job: str, attempts: int, why: str) -> dict:
    """The result of a job that killed its worker every time it ran."""
    return {"scores": None, "timings": {}, "status_counts": {},
            "error": f"rejected: its worker died {attempts} times ({why}) scoring {job}"}


def relay(out, inner, *, attempt: int, job: str, died_of: str | None, again) -> None:
    """Pass a finished attempt's outcome on to the caller's future ``out``. ``died_of`` names how its worker
    died (None: it did not): then the job goes out again through ``again(attempt + 1)`` until
    ``MAX_ATTEMPTS``, and comes back rejected after that. Shared by the process and Ray executors."""
    exc = inner.exception()
    if died_of is not None:
        if attempt >= MAX_ATTEMPTS:
            out.set_result(died(job, attempt, died_of))
            return
        log.warning("%s while scoring %s; handing the job out again (attempt %d)", died_of, job, attempt + 1)
        again(attempt + 1)
    elif exc is not None:
        out.set_exception(exc)
    else:
        out.set_result(inner.result())
