"""Docker backends: one container per episode (OS tasks) or per run (code), from the rootfs image.

Containers get ``network_mode="none"``, memory (and swap) limits, a pids limit, one CPU, Docker's
default capabilities minus NET_RAW, MKNOD and SYS_CHROOT, no-new-privileges, an init process that reaps
zombies, and labels (``cycleqd``, ``cycleqd.pid``) so ``envs.docker_engine.reap`` can remove what a
crashed process left behind. The engine is the one that answers or a private dockerd
(``envs/docker_engine.py``).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Mapping, Sequence

from envs.docker_engine import LABEL, client, engine_host, ensure_image
from envs.sandbox.base import ExecResult, ExecStatus, Limits, wait_capped
from envs.sandbox.shell import InteractiveShell
from harness.errors import HarnessError

INFRA = "/proc/1"  # the container's init


def _container(image: str, lim: Limits, read_only: bool = False, tmpfs: Mapping[str, str] | None = None,
               rlimits: bool = False):
    import docker

    ulimits = [docker.types.Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
               docker.types.Ulimit(name="fsize", soft=lim.file_bytes, hard=lim.file_bytes),
               docker.types.Ulimit(name="core", soft=0, hard=0)] if rlimits else None
    return client().containers.run(
        image, ["sleep", "infinity"], detach=True, network_mode="none", mem_limit=lim.memory_bytes,
        memswap_limit=lim.memory_bytes, pids_limit=lim.pids, nano_cpus=1_000_000_000, init=True,
        cap_drop=["NET_RAW", "MKNOD", "SYS_CHROOT"], security_opt=["no-new-privileges"], hostname="sandbox",
        labels={LABEL: "1", f"{LABEL}.pid": str(os.getpid())}, read_only=read_only, tmpfs=dict(tmpfs or {}),
        environment={"HOME": "/root", "LANG": "C.UTF-8"}, ulimits=ulimits)


def _docker(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], env=dict(os.environ, DOCKER_HOST=engine_host()), timeout=timeout, **kw)


def _kill_all_but(cid: str, keep: Sequence[int]) -> None:
    """Kill every process in the container except init, its ``sleep infinity`` and ``keep``."""
    keep_s = " ".join(str(k) for k in keep)
    script = ("for p in /proc/[0-9]*; do p=${p#/proc/}; case \" 1 $$ $MAIN " + keep_s + " \" in "
              "*\" $p \"*) ;; *) kill -9 $p 2>/dev/null;; esac; done")
    main = _docker("exec", cid, "sh", "-c", "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
                   "[ \"$c\" = 'sleep infinity ' ] && echo ${p#/proc/} && break; done", capture_output=True,
                   text=True).stdout.strip() or "0"
    _docker("exec", "-e", f"MAIN={main}", cid, "sh", "-c", script, capture_output=True)


class DockerShell(InteractiveShell):
    """An OS-task episode in a container, with the same shell protocol as RootfsShell."""

    def __init__(self, rootfs: str | Path | None = None, limits: Limits | None = None):
        from envs.rootfs import ensure_rootfs

        self.limits = limits or Limits(wall_s=10, cpu_s=60, memory_bytes=1 << 30, pids=512, output_bytes=1 << 20)
        self.image = ensure_image(Path(rootfs) if rootfs else ensure_rootfs())
        self.container = _container(self.image, self.limits)
        self.cid = self.container.id
        self.proc = subprocess.Popen(["docker", "exec", "-i", "-w", "/", self.cid, "bash", "--noprofile", "--norc"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, DOCKER_HOST=engine_host()), start_new_session=True)
        self._attach()
        first = self.run("echo $$", timeout=30)
        if first.exit_code != 0:
            self.close()
            raise HarnessError(f"docker: the episode shell did not start: {first.output[-200:]!r}")
        self.shell_pid = int(first.output.strip())

    def _kill_foreground(self) -> None:
        _kill_all_but(self.cid, [self.shell_pid])

    def exec(self, argv: Sequence[str], timeout: float | None = None):
        return self._exec_to_file(["docker", "exec", "-w", "/", self.cid, *argv], timeout,
                                  env=dict(os.environ, DOCKER_HOST=engine_host()))

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        try:
            self.container.remove(force=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DockerSandbox:
    """One-shot runs (code execution) in a fresh container: read-only root, tmpfs /work and /tmp, uid 65534."""

    def __init__(self, rootfs: str | Path | None = None, limits: Limits | None = None):
        from envs.rootfs import ensure_rootfs

        self.limits = limits or Limits()
        self.image = ensure_image(Path(rootfs) if rootfs else ensure_rootfs())
        self.python = "python3"

    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None, stdin: bytes | None = None,
            limits: Limits | None = None, env: Mapping[str, str] | None = None, collect: Sequence[str] = ()) -> ExecResult:
        lim = limits or self.limits
        t0 = time.monotonic()
        try:
            c = _container(self.image, lim, read_only=True, rlimits=True,
                           tmpfs={"/work": f"size={lim.workdir_bytes},mode=1777", "/tmp": f"size={lim.workdir_bytes},mode=1777"})
        except Exception as exc:  # noqa: BLE001 - an engine failure is a harness error
            return ExecResult(None, b"", str(exc).encode(), ExecStatus.ENV_ERROR, 0.0, {"error": f"docker: {exc}"})
        try:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for rel, data in (files or {}).items():
                    raw = data.encode() if isinstance(data, str) else data
                    info = tarfile.TarInfo(rel)
                    info.size, info.uid, info.gid, info.mode = len(raw), 65534, 65534, 0o644
                    tar.addfile(info, io.BytesIO(raw))
            _docker("exec", "-i", c.id, "tar", "-x", "-C", "/work", input=buf.getvalue(), capture_output=True, check=True)
            envs = [x for k, v in {"PYTHONHASHSEED": "0", **(env or {})}.items() for x in ("-e", f"{k}={v}")]
            proc = subprocess.Popen(["docker", "exec", "-i" if stdin is not None else "-t=false", "-u", "65534:65534",
                                     "-w", "/work", *envs, c.id, "timeout", "-s", "KILL", str(int(lim.wall_s) + 1),
                                     *argv],
                                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=dict(os.environ, DOCKER_HOST=engine_host()))
            # the run is the only thing in the container running as uid 65534: kill by user
            res = wait_capped(proc, lambda: _docker("exec", "-u", "0", c.id, "pkill", "-9", "-u", "65534",
                                                    capture_output=True), lim, stdin, t0)
            if res.status == ExecStatus.OK and res.returncode == 137 and res.wall_s < lim.wall_s:
                res.status = ExecStatus.MEMORY  # SIGKILL from the memory cgroup, not from us
            if collect:
                res.detail["files"] = {}
                for name in collect:
                    got = _docker("exec", c.id, "cat", f"/work/{name}", capture_output=True)
                    res.detail["files"][name] = got.stdout if got.returncode == 0 else None
            return res
        except subprocess.CalledProcessError as exc:
            return ExecResult(None, b"", exc.stderr or b"", ExecStatus.ENV_ERROR, time.monotonic() - t0,
                              {"error": "docker: could not copy files into the container"})
        finally:
            c.remove(force=True)
