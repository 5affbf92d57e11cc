"""A Docker engine for the sandboxes: use one that answers, or start a private ``dockerd``.

The private daemon uses flags that leave nothing behind on the host (no bridge, no iptables rules) and its
own data, exec root, socket and pid file; it is stopped at exit. No registry is reachable, so images are
imported from the cached root filesystem (``tar | docker import``) rather than pulled.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from harness.errors import HarnessError

LABEL = "cycleqd"
_ENGINE: dict = {}


def _answers(host: str | None) -> bool:
    env = dict(os.environ, **({"DOCKER_HOST": host} if host else {}))
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                          capture_output=True, timeout=10).returncode == 0


def engine_host(start: bool = True) -> str:
    """DOCKER_HOST of an engine that answers (the environment's, the default socket, or ours)."""
    if "host" in _ENGINE:
        return _ENGINE["host"]
    for host in (os.environ.get("DOCKER_HOST"), None):
        if _answers(host):
            _ENGINE["host"] = host or "unix:///var/run/docker.sock"
            return _ENGINE["host"]
    if not start:
        raise HarnessError("docker: no engine answers")
    dockerd = shutil.which("dockerd")
    if not dockerd:
        raise HarnessError("docker: no engine answers and dockerd is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise HarnessError("docker: no engine answers and starting dockerd needs root")
    root = Path(os.environ.get("CYCLEQD_DOCKER_ROOT", "/var/lib/cycleqd-docker"))
    run = Path("/run/cycleqd-docker")
    for d in (root, run):
        d.mkdir(parents=True, exist_ok=True)
    sock = run / "docker.sock"
    log = open(run / "dockerd.log", "ab")
    proc = subprocess.Popen([dockerd, "--bridge=none", "--iptables=false", "--ip6tables=false",
                             f"--data-root={root}", f"--exec-root={run / 'exec'}", f"-H=unix://{sock}",
                             f"--pidfile={run / 'dockerd.pid'}"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    host = f"unix://{sock}"
    deadline = time.monotonic() + 30
    while not _answers(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise HarnessError(f"docker: dockerd did not start (see {run / 'dockerd.log'})")
        time.sleep(0.2)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    atexit.register(stop)
    _ENGINE.update(host=host, proc=proc)
    return host


def client():
    try:
        import docker
    except ImportError:
        raise HarnessError("docker: the docker SDK is not installed (pip install '.[envs]')") from None
    return docker.DockerClient(base_url=engine_host(), timeout=60)


def ensure_image(rootfs: Path) -> str:
    """An image made from the cached rootfs, tagged by its name (built once per engine)."""
    tag = f"cycleqd-os:{Path(rootfs).name}"
    env = dict(os.environ, DOCKER_HOST=engine_host())
    if subprocess.run(["docker", "image", "inspect", tag], env=env, capture_output=True).returncode == 0:
        return tag
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./.cycleqd-complete", "-c", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run(["docker", "import", "-", tag], stdin=tar.stdout, env=env, capture_output=True, text=True)
    tar.wait()
    if imp.returncode != 0:
        raise HarnessError(f"docker: importing {rootfs} failed: {imp.stderr.strip()[-300:]}")
    return tag


def reap() -> int:
    """Remove containers of ours whose creating process is gone (left behind by a crash)."""
    n = 0
    for c in client().containers.list(all=True, filters={"label": LABEL}):
        owner = int(c.labels.get(f"{LABEL}.pid", "0") or 0)
        if owner and Path(f"/proc/{owner}").exists() and owner != os.getpid():
            continue
        if owner == os.getpid():
            continue
        c.remove(force=True)
        n += 1
    return n
