"""How often a job is handed out again after its worker died, and what it returns when it keeps killing
workers: a rejection with the reason (a model must not be able to stop a run), never a crash."""

MAX_ATTEMPTS = 3


def died(job: str, attempts: int, why: str) -> dict:
    """The result of a job that killed its worker every time it ran."""
    return {"scores": None, "timings": {}, "status_counts": {},
            "error": f"rejected: its worker died {attempts} times ({why}) scoring {job}"}
