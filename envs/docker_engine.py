"""A Docker engine for the sandboxes, reached through the Docker SDK only: one that answers, or a private
``dockerd`` of the harness's own.

The private daemon uses flags that leave nothing behind on the host (no bridge, no iptables rules) and its
own data, exec root, socket and pid file; it is stopped at exit. Whenever it starts (or a private daemon
that an earlier, crashed process left running is adopted), containers and volumes labelled ``cycleqd``
whose creating process is gone are removed (``reap``). No registry is reachable, so images are imported
from the cached root filesystem (a ``tar`` stream into the engine's image import) rather than pulled.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

try:
    import docker  # optional: the 'envs' extra (the Docker SDK)
except ImportError:  # pragma: no cover - reported by client() / engine_host()
    docker = None

LABEL = "cycleqd"
DEFAULT_HOST = "unix:///var/run/docker.sock"
_ENGINE: dict[str, Any] = {}
_CLIENTS: dict[tuple[str, int], Any] = {}


def _sdk():
    if docker is None:
        raise HarnessError("docker: the docker SDK is not installed (pip install '.[envs]')")
    return docker


def owner_labels() -> dict[str, str]:
    """Labels of everything this process creates in the engine (``reap`` removes them once it is gone)."""
    return {LABEL: "1", f"{LABEL}.pid": str(os.getpid())}


def start_container(cl, image: str, argv, **kw):
    """A started container (``containers.create`` then ``start``). Unlike ``containers.run``, a container
    whose start fails is removed rather than left behind for ``reap``."""
    c = cl.containers.create(image, list(argv), **kw)
    try:
        c.start()
    except BaseException:
        discard(c)
        raise
    return c


def discard(obj, attempts: int = 6) -> bool:
    """Remove a container or volume of ours (``force``), retrying what a busy engine refuses for a while
    (a removal already in progress, a root filesystem still busy, a read timeout): a sandbox must not
    leave its container behind because the engine was slow once. True when it is gone."""
    for i in range(attempts):
        try:
            obj.remove(force=True)
            return True
        except Exception as exc:  # noqa: BLE001 - the SDK's APIError or the HTTP library's timeouts
            if docker is not None and isinstance(exc, docker.errors.NotFound):
                return True
            if i == attempts - 1:
                logging.getLogger("cycleqd").warning("docker: could not remove %s: %s (reap removes it once "
                                                     "this process is gone)", getattr(obj, "id", obj), exc)
                return False
            time.sleep(0.1 * 2 ** i)
    return False


def _answers(host: str) -> bool:
    if docker is None:
        return False
    try:
        c = docker.DockerClient(base_url=host, timeout=10)
    except docker.errors.DockerException:
        return False
    try:
        return bool(c.ping())
    except Exception:  # noqa: BLE001 - any failure means "does not answer"
        return False
    finally:
        c.close()


class PrivateEngine:
    """A ``dockerd`` of the harness's own (data root ``CYCLEQD_DOCKER_ROOT``, default
    /var/lib/cycleqd-docker; socket, pid file and exec root in ``CYCLEQD_DOCKER_RUN``, default
    /run/cycleqd-docker). ``start`` reaps what crashed processes left behind."""

    def __init__(self, root: str | Path | None = None, run: str | Path | None = None):
        self.root = Path(root or os.environ.get("CYCLEQD_DOCKER_ROOT", "/var/lib/cycleqd-docker"))
        self.run_dir = Path(run or os.environ.get("CYCLEQD_DOCKER_RUN", "/run/cycleqd-docker"))
        self.host = f"unix://{self.run_dir / 'docker.sock'}"
        self.proc: subprocess.Popen | None = None
        self.reaped = 0

    def start(self, timeout: float = 30.0) -> str:
        """Start the daemon (or adopt one of ours that answers already), then reap; returns its host."""
        _sdk()
        if not _answers(self.host):
            self._launch(timeout)
        self.reaped = reap(self.client())
        return self.host

    def _launch(self, timeout: float) -> None:
        dockerd = shutil.which("dockerd")
        if not dockerd:
            raise HarnessError("docker: no engine answers and dockerd is not installed (apt-get install docker.io)")
        if os.geteuid() != 0:
            raise HarnessError("docker: no engine answers and starting dockerd needs root")
        for d in (self.root, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / "dockerd.log", "ab") as log:
            self.proc = subprocess.Popen(
                [dockerd, "--bridge=none", "--iptables=false", "--ip6tables=false", f"--data-root={self.root}",
                 f"--exec-root={self.run_dir / 'exec'}", f"-H={self.host}", f"--pidfile={self.run_dir / 'dockerd.pid'}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not _answers(self.host):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise HarnessError(f"docker: dockerd did not start (see {self.run_dir / 'dockerd.log'})")
            time.sleep(0.2)

    def client(self):
        return _client_for(self.host)

    def stop(self) -> None:
        """Stop the daemon if this object started it (an adopted one is left running)."""
        proc, self.proc = self.proc, None
        _CLIENTS.pop((self.host, os.getpid()), None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def engine_host(start: bool = True) -> str:
    """The host of an engine that answers: the environment's (DOCKER_HOST), the default socket, or the
    private engine (started here when ``start``, reaped either way)."""
    if "host" in _ENGINE:
        return _ENGINE["host"]
    _sdk()
    for host in (os.environ.get("DOCKER_HOST"), DEFAULT_HOST):
        if host and _answers(host):
            _ENGINE["host"] = host
            return host
    eng = PrivateEngine()
    if not start and not _answers(eng.host):
        raise HarnessError("docker: no engine answers")
    host = eng.start()
    atexit.register(eng.stop)
    _ENGINE.update(host=host, engine=eng)
    return host


def _client_for(host: str):
    key = (host, os.getpid())  # one client per process (a forked worker makes its own)
    if key not in _CLIENTS:
        _CLIENTS[key] = _sdk().DockerClient(base_url=host, timeout=60)
    return _CLIENTS[key]


def client():
    """A Docker SDK client of the engine (``engine_host``)."""
    _sdk()
    return _client_for(engine_host())


def ensure_image(rootfs: Path) -> str:
    """An image made from the cached rootfs, tagged by its name (imported once per engine)."""
    cl = client()
    repo, tag = "cycleqd-os", Path(rootfs).name
    ref = f"{repo}:{tag}"
    try:
        cl.images.get(ref)
        return ref
    except docker.errors.ImageNotFound:
        pass
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--exclude=./.cycleqd-complete", "-c", "."],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        cl.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag)
    except docker.errors.APIError as exc:
        raise HarnessError(f"docker: importing {rootfs} failed: {str(exc)[-300:]}") from None
    finally:
        tar.stdout.close()
        tar.wait()
    try:
        cl.images.get(ref)
    except docker.errors.ImageNotFound:
        raise HarnessError(f"docker: importing {rootfs} did not make {ref}") from None
    return ref


def _owner_alive(labels: dict | None) -> bool:
    try:
        owner = int((labels or {}).get(f"{LABEL}.pid", "0") or 0)
    except ValueError:
        return False
    return owner == os.getpid() or (owner > 0 and Path(f"/proc/{owner}").exists())


def reap(cl=None) -> int:
    """Remove containers, volumes and images of ours whose creating process is gone (left by a crash);
    returns how many containers were removed."""
    cl = cl or client()
    n = 0
    for c in cl.containers.list(all=True, filters={"label": LABEL}):
        if _owner_alive(c.labels):
            continue
        n += discard(c)
    for v in cl.volumes.list(filters={"label": LABEL}):
        if _owner_alive(v.attrs.get("Labels")):
            continue
        discard(v, attempts=1)  # one still in use by a live container stays
    for im in cl.images.list(filters={"label": LABEL}):  # the OS judge's commits of episodes
        if _owner_alive((im.attrs.get("Config") or {}).get("Labels")):
            continue
        try:
            cl.images.remove(im.id, force=True)
        except docker.errors.APIError:
            pass
    return n
