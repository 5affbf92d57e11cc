"""Docker backends: one container per episode (OS tasks) or per run (code), from the rootfs image.

Containers get ``network_mode="none"``, memory (and swap) limits, a pids limit, one CPU, Docker's
default capabilities minus NET_RAW, MKNOD and SYS_CHROOT, no-new-privileges, an init process that reaps
zombies, and labels (``cycleqd``, ``cycleqd.pid``) so ``envs.docker_engine.reap`` removes what a crashed
process left behind. Everything goes through the Docker SDK (no ``docker`` CLI): processes are execs
of the low-level API whose hijacked socket carries stdin and the multiplexed stdout / stderr frames;
files go in with ``put_archive`` and come out with ``get_archive`` (a tar parsed as hostile: size cap,
regular files only). The engine is the one that answers or a private dockerd (``envs/docker_engine.py``).
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import os
import secrets
import select
import shutil
import socket
import struct
import tarfile
import tempfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from envs.docker_engine import client, discard, ensure_image, owner_labels, start_container
from envs.rootfs import ensure_rootfs
from envs.sandbox import judge_root
from envs.sandbox.base import CappedOutput, CodeSandbox, ExecResult, ExecStatus, Limits
from envs.sandbox.shell import InteractiveShell
from harness.errors import HarnessError

try:
    import docker  # optional: the 'envs' extra (the Docker SDK)
except ImportError:  # pragma: no cover - client() reports it
    docker = None

SANDBOX_UID = "65534"
TAR_SLACK = 64 << 10  # tar headers and padding around a collected file


def _container(image: str, lim: Limits, read_only: bool = False, tmpfs: Mapping[str, str] | None = None,
               rlimits: bool = False, volumes: Mapping[str, dict] | list[str] | None = None, command: Sequence[str] | None = None,
               detach_run: bool = True, **extra):
    """A container with the sandbox's limits (``command``: default ``sleep infinity``; ``detach_run``
    False: created, not started; ``extra``: more ``containers.create`` arguments, e.g. ``pid_mode``)."""
    cl = client()
    ulimits = [docker.types.Ulimit(name="nofile", soft=lim.nofile, hard=lim.nofile),
               docker.types.Ulimit(name="fsize", soft=lim.file_bytes, hard=lim.file_bytes),
               docker.types.Ulimit(name="core", soft=0, hard=0)] if rlimits else None
    kw = dict(network_mode="none", mem_limit=lim.memory_bytes, memswap_limit=lim.memory_bytes, pids_limit=lim.pids,
              nano_cpus=1_000_000_000, init=True, cap_drop=["NET_RAW", "MKNOD", "SYS_CHROOT"],
              security_opt=["no-new-privileges"], hostname="sandbox", labels=owner_labels(), read_only=read_only,
              tmpfs=dict(tmpfs or {}), volumes=volumes if isinstance(volumes, list) else dict(volumes or {}),
              environment={"HOME": "/root", "LANG": "C.UTF-8"}, ulimits=ulimits)
    kw.update(extra)
    argv = list(command or ["sleep", "infinity"])
    if detach_run:
        return start_container(cl, image, argv, **kw)
    return cl.containers.create(image, argv, **kw)


class _Exec:
    """One process started in a container through the low-level API; its stdout and stderr arrive as
    frames (8-byte header: stream, 3 zero bytes, big-endian length) on the exec's hijacked socket."""

    def __init__(self, container, argv: Sequence[str], *, user: str = "", workdir: str = "/",
                 environment: Mapping[str, str] | None = None, stdin: bool = False):
        self.api = container.client.api
        self.id = self.api.exec_create(container.id, list(argv), stdin=stdin, stdout=True, stderr=True, tty=False,
                                       user=user, workdir=workdir, environment=dict(environment or {}))["Id"]
        self.sock = self.api.exec_start(self.id, socket=True)
        self.raw: socket.socket = getattr(self.sock, "_sock", self.sock)
        self._buf = bytearray()
        self.eof = False

    def send(self, data: bytes) -> None:
        self.raw.sendall(data)

    def close_stdin(self) -> None:
        try:
            self.raw.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def recv(self, timeout: float) -> list[tuple[int, bytes]] | None:
        """The complete frames that arrived within ``timeout`` (None: nothing; [] and ``eof``: the end)."""
        if self.eof:
            return []
        r, _, _ = select.select([self.raw], [], [], max(0.0, timeout))
        if not r:
            return None
        try:
            data = self.raw.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            data = b""
        if not data:
            self.eof = True
            return []
        self._buf += data
        frames = []
        while len(self._buf) >= 8:
            stream, size = struct.unpack(">BxxxL", self._buf[:8])
            if len(self._buf) < 8 + size:
                break
            frames.append((stream, bytes(self._buf[8 : 8 + size])))
            del self._buf[: 8 + size]
        return frames

    def finished(self) -> bool:
        """Whether the process has exited. Not before it started: right after ``exec_start`` the engine may
        not list it as running yet (no exit code then either)."""
        try:
            info = self.api.exec_inspect(self.id)
        except docker.errors.APIError:
            return True
        return not info["Running"] and info["ExitCode"] is not None

    def exit_code(self, wait_s: float = 5.0) -> int | None:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                info = self.api.exec_inspect(self.id)
            except docker.errors.APIError:
                return None
            if not info["Running"] and info["ExitCode"] is not None:
                return info["ExitCode"]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def close(self) -> None:
        for s in (self.sock, self.raw):
            try:
                s.close()
            except OSError:
                pass


def _read_to_end(ex: _Exec, sink, deadline: float, poll_s: float = 0.2) -> bool:
    """Feed ``sink(stream, data)`` until the exec's output ends, or its process exited (background
    children may hold the stream open), or ``deadline``. True when it ended before the deadline."""
    last_poll = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            return False
        frames = ex.recv(min(poll_s, deadline - now))
        if frames:
            for stream, data in frames:
                sink(stream, data)
        if ex.eof:
            return True
        if time.monotonic() - last_poll >= poll_s:
            last_poll = time.monotonic()
            if ex.finished():
                while True:  # what is already on the socket still counts
                    more = ex.recv(0.05)
                    if not more:
                        return True
                    for stream, data in more:
                        sink(stream, data)


def _kill_all_but(container, keep: Sequence[int], sh: str = "sh", env: Mapping[str, str] | None = None) -> None:
    """Kill every process in the container except init, its ``sleep infinity`` and ``keep`` (``sh``,
    ``env``: the shell that does it; in the judge, the pristine one)."""
    script = ("M=0; for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
              "[ \"$c\" = 'sleep infinity ' ] && M=${p#/proc/} && break; done; "
              "for p in /proc/[0-9]*; do p=${p#/proc/}; case \" 1 $$ $M " + " ".join(str(k) for k in keep)
              + " \" in *\" $p \"*) ;; *) kill -9 $p 2>/dev/null;; esac; done")
    try:
        container.exec_run([sh, "-c", script], user="0", environment=dict(env or {}))
    except docker.errors.APIError:
        pass


_INIT: list[list[str]] = []


def _init_bind() -> list[str]:
    """The engine's docker-init, bound read-only where the engine binds it (a local engine; none else)."""
    if not _INIT:
        found = shutil.which(client().info().get("InitBinary") or "docker-init")
        _INIT.append([f"{os.path.realpath(found)}:/sbin/docker-init:ro"] if found else [])
    return _INIT[0]


def _deleted_commands(container, rootfs: Path) -> set[str]:
    """The paths under /usr/bin and /usr/sbin the agent removed: from the container's overlay upper
    directory where the engine is local and uses overlay2, else from the engine's diff (a walk of the
    whole container: ~1 s)."""
    upper = ((container.attrs.get("GraphDriver") or {}).get("Data") or {}).get("UpperDir")
    if upper and os.path.isdir(upper):
        return judge_root.removed_commands(Path(upper), rootfs)
    return {d["Path"] for d in (container.diff() or []) if d.get("Kind") == 2}


_SHADOWS: dict[tuple[str, frozenset], Path] = {}


def _shadow_dir(rootfs: Path, deleted: set[str]) -> Path:
    """The judge's /.judge/bin for this set of removed commands, made once per process (bound read-only,
    so containers can share it) and removed at exit."""
    key = (str(rootfs), frozenset(p for p in deleted if p.startswith(("/usr/bin/", "/usr/sbin/"))))
    if key not in _SHADOWS:
        d = Path(tempfile.mkdtemp(prefix="cycleqd-judge-bin-"))
        if not _SHADOWS:
            atexit.register(lambda: [shutil.rmtree(p, ignore_errors=True) for p in _SHADOWS.values()])
        judge_root.shadow_bin(rootfs, d, {rel: {n for n in os.listdir(rootfs / rel) if f"/{rel}/{n}" not in key[1]}
                                          for rel in judge_root.COMMAND_DIRS})
        _SHADOWS[key] = d
    return _SHADOWS[key]


class DockerShell(InteractiveShell):
    """An OS-task episode in a container, with the same shell protocol as RootfsShell.

    ``exec_isolated`` runs in a second container made from a commit of the episode's, sharing its PID
    namespace (the episode's processes, a throw-away copy of its files). ``seal`` kills the episode's
    container, commits its final files and starts the judge's container from them, with the pristine
    system of the rootfs bound read-only over them (``envs.sandbox.judge_root``: the same layout as the
    local judge; the engine must see the rootfs's path, as a local engine does)."""

    def __init__(self, rootfs: str | Path | None = None, limits: Limits | None = None):
        super().__init__(rootfs, limits)
        self.container = None
        self.judge = None
        self.shell: _Exec | None = None
        self.images: list[str] = []
        self.rootfs = Path(rootfs) if rootfs else ensure_rootfs()
        self.image = ensure_image(self.rootfs)
        try:
            self.container = _container(self.image, self.limits)
            self.shell = _Exec(self.container, ["bash", "--noprofile", "--norc"], stdin=True, workdir="/")
            first = self.run("echo $$", timeout=30)
            if first.exit_code != 0:
                raise HarnessError(f"docker: the episode shell did not start: {first.output[-200:]!r}")
            self.shell_pid = int(first.output.strip())
        except docker.errors.DockerException as exc:
            self.close()
            raise HarnessError(f"docker: the episode container did not start: {exc}") from None
        except BaseException:
            self.close()
            raise

    # -- the transport: the shell exec's socket -------------------------------------------------------
    def _send(self, data: bytes) -> None:
        self.shell.send(data)

    def _recv(self, timeout: float) -> bytes | None:
        frames = self.shell.recv(timeout)
        if frames is None:
            return None
        if not frames:
            return b"" if self.shell.eof else None
        return b"".join(data for _, data in frames)

    @property
    def alive(self) -> bool:
        return self.judge is None and self.shell is not None and not self.shell.eof and not self.shell.finished()

    def _kill_foreground(self) -> None:
        if self.judge is not None:
            _kill_all_but(self.judge, [], sh=f"/{judge_root.JUDGE_DIR}/usr/bin/sh", env=judge_root.JUDGE_ENV)
        else:
            _kill_all_but(self.container, [self.shell_pid])

    def exec(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` as a separate process in the episode's container; after ``seal``, in the judge's."""
        target = self.judge if self.judge is not None else self.container
        if target is None:
            return None, "", ExecStatus.ENV_ERROR
        cap = self.limits.output_bytes
        out = bytearray()

        def sink(_stream: int, data: bytes) -> None:
            if len(out) < cap:
                out.extend(data[: cap - len(out)])

        env = judge_root.JUDGE_ENV if self.judge is not None else None
        try:
            ex = _Exec(target, argv, workdir="/", environment=env)
        except docker.errors.APIError as exc:
            return None, str(exc)[-300:], ExecStatus.ENV_ERROR
        try:
            if _read_to_end(ex, sink, time.monotonic() + (timeout or self.limits.wall_s)):
                rc, status = ex.exit_code(), ExecStatus.OK
            else:
                self._kill_foreground()
                rc, status = None, ExecStatus.TIMEOUT
        finally:
            ex.close()
        return rc, out.decode("utf-8", "replace"), status

    # -- the judge ----------------------------------------------------------------------------------
    def _commit(self, container) -> str:
        ref = f"cycleqd-judge:{secrets.token_hex(8)}"
        repo, tag = ref.split(":")
        container.commit(repository=repo, tag=tag, conf={"Labels": owner_labels()})
        self.images.append(ref)
        return ref

    def exec_isolated(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` in a container made from a commit of the episode's, in the episode's PID namespace:
        its processes are seen, what it writes is thrown away (the example script, before the agent acts)."""
        if self.judge is not None or self.container is None:
            return None, "", ExecStatus.ENV_ERROR
        c = None
        try:
            image = self._commit(self.container)
            # in a shared PID namespace the engine runs no init of its own, and so binds no docker-init
            # into /usr/sbin as it did in the episode: bound here, ``du /usr`` counts the same (os/42)
            c = _container(image, self.limits, command=list(argv), detach_run=False, volumes=_init_bind(),
                           pid_mode=f"container:{self.container.id}", working_dir="/",
                           environment={"HOME": "/root", "LANG": "C.UTF-8", "PATH": judge_root.EPISODE_PATH})
            c.start()
            try:
                rc, status = c.wait(timeout=timeout or self.limits.wall_s)["StatusCode"], ExecStatus.OK
            except Exception:  # noqa: BLE001 - the SDK raises the HTTP library's read timeout
                c.kill()
                rc, status = None, ExecStatus.TIMEOUT
            out = c.logs(stdout=True, stderr=True)[: self.limits.output_bytes]
            return rc, out.decode("utf-8", "replace"), status
        except docker.errors.DockerException as exc:
            return None, f"docker: the isolated view did not run: {str(exc)[-300:]}", ExecStatus.ENV_ERROR
        finally:
            if c is not None:
                discard(c)

    def seal(self) -> None:
        """Kill the episode's container (every process of the agent), commit its files and start the judge's
        container from them with the pristine system bound over them; later ``exec`` calls run there."""
        if self.judge is not None:
            return
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        try:
            self.container.kill()
        except docker.errors.APIError:
            pass  # already stopped (the agent killed its init)
        try:
            self.container.wait(timeout=30)
            deleted = _deleted_commands(self.container, self.rootfs)
            image = self._commit(self.container)
            volumes = judge_root.docker_binds(self.rootfs, _shadow_dir(self.rootfs, deleted))
            self.judge = _container(image, self.limits, volumes=volumes)
        except docker.errors.DockerException as exc:
            raise HarnessError(f"docker: the judge's container did not start: {str(exc)[-300:]}") from None

    def close(self) -> None:
        if self.shell is not None:
            self.shell.close()
            self.shell = None
        for c in (self.judge, self.container):
            if c is not None:
                discard(c)
        self.judge = self.container = None
        for ref in self.images:
            try:
                client().images.remove(ref, force=True, noprune=False)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.images = []


def _tar_of(files: Mapping[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for rel, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(rel)
            info.size, info.uid, info.gid, info.mode = len(raw), 65534, 65534, 0o644
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _stat(container, path: str) -> dict | None:
    """The engine's stat of a path in the container, without following a final link (None: missing)."""
    api = container.client.api
    res = api.head(api._url("/containers/{0}/archive", container.id), params={"path": path})
    if res.status_code != 200:
        return None
    try:
        return json.loads(base64.b64decode(res.headers.get("X-Docker-Container-Path-Stat", "")))
    except ValueError:
        return None


def _collect(container, path: str, max_bytes: int) -> bytes | None:
    """A regular file's bytes out of the container; None when missing, not a regular file (a link, a
    directory, a device), under a linked directory, or bigger than ``max_bytes``. The archive comes from
    the sandbox: hostile."""
    parts = PurePosixPath(path).parts
    for i in range(3, len(parts)):  # /work/a/b: /work/a must be a real directory, not a link elsewhere
        st = _stat(container, str(PurePosixPath(*parts[:i])))
        if st is None or st.get("linkTarget"):
            return None
    try:
        stream, stat = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    if stat.get("linkTarget") or int(stat.get("size", 0)) > max_bytes:
        return None
    got = bytearray()
    for chunk in stream:
        got += chunk
        if len(got) > max_bytes + TAR_SLACK:
            return None
    try:
        with tarfile.open(fileobj=io.BytesIO(bytes(got)), mode="r:") as tar:
            members = tar.getmembers()
            if len(members) != 1:
                return None
            m = members[0]
            if not m.isreg() or m.name != PurePosixPath(path).name or m.size > max_bytes:
                return None
            fh = tar.extractfile(m)
            return fh.read(max_bytes + 1) if fh is not None else None
    except (tarfile.TarError, OSError):
        return None


class DockerSandbox(CodeSandbox):
    """One-shot runs (code execution) in a fresh container: read-only root, /work a size-limited tmpfs
    volume (``put_archive`` / ``get_archive`` reach volumes, not a container's own tmpfs mounts), /tmp a
    tmpfs, uid 65534."""

    python = "python3"

    def __init__(self, limits: Limits | None = None, *, rootfs: str | Path | None = None):
        super().__init__(limits)
        self.image = ensure_image(Path(rootfs) if rootfs else ensure_rootfs())

    def run(self, argv: Sequence[str], *, files: Mapping[str, bytes | str] | None = None, stdin: bytes | None = None,
            limits: Limits | None = None, env: Mapping[str, str] | None = None, collect: Sequence[str] = ()) -> ExecResult:
        lim = limits or self.limits
        t0 = time.monotonic()
        vol = c = None
        try:
            try:
                vol = client().volumes.create(
                    name=f"cqd-work-{secrets.token_hex(8)}", driver="local", labels=owner_labels(),
                    driver_opts={"type": "tmpfs", "device": "tmpfs", "o": f"size={lim.workdir_bytes},mode=1777"})
                c = _container(self.image, lim, read_only=True, rlimits=True,
                               volumes={vol.name: {"bind": "/work", "mode": "rw"}},
                               tmpfs={"/tmp": f"size={lim.workdir_bytes},mode=1777"})
                if files and not c.put_archive("/work", _tar_of(files)):
                    raise HarnessError("could not copy files into the container")
            except (docker.errors.DockerException, HarnessError) as exc:  # an engine failure is a harness error
                return ExecResult(None, b"", str(exc).encode(), ExecStatus.ENV_ERROR, time.monotonic() - t0,
                                  {"error": f"docker: {exc}"})
            res = self._exec(c, argv, lim, stdin, env, t0)
            if collect and res.status != ExecStatus.ENV_ERROR:
                res.detail["files"] = {name: _collect(c, f"/work/{name}", lim.file_bytes) for name in collect}
            return res
        finally:
            for obj in (c, vol):
                if obj is not None:
                    discard(obj)

    @staticmethod
    def _kill_run(c) -> None:
        """The run is the only thing in the container running as uid 65534: kill by user (and, when no
        process can start any more, the whole container)."""
        try:
            rc, _ = c.exec_run(["pkill", "-9", "-u", SANDBOX_UID], user="0")
            if rc in (0, 1):  # killed, or nothing left to kill
                return
        except docker.errors.APIError:
            pass
        try:
            c.kill()
        except docker.errors.APIError:
            pass

    def _exec(self, c, argv, lim: Limits, stdin: bytes | None, env: Mapping[str, str] | None, t0: float) -> ExecResult:
        cap = CappedOutput(lim.output_bytes, lambda: self._kill_run(c))
        try:
            ex = _Exec(c, ["timeout", "-s", "KILL", str(int(lim.wall_s) + 1), *argv], user=f"{SANDBOX_UID}:{SANDBOX_UID}",
                       workdir="/work", environment={"PYTHONHASHSEED": "0", **(env or {})}, stdin=stdin is not None)
        except docker.errors.APIError as exc:
            return ExecResult(None, b"", str(exc).encode(), ExecStatus.ENV_ERROR, time.monotonic() - t0,
                              {"error": f"docker: {exc}"})
        try:
            if stdin is not None:
                def feed() -> None:  # in a thread: a program that never reads its stdin must not stall us
                    try:
                        ex.send(stdin)
                    except OSError:
                        pass
                    ex.close_stdin()

                threading.Thread(target=feed, daemon=True).start()
            # the wall clock runs from the start of the program (as for a local process)
            ended = _read_to_end(ex, lambda s, d: cap.add("err" if s == 2 else "out", d), time.monotonic() + lim.wall_s)
            self._kill_run(c)  # on time out, and background children of a finished command die with it
            if not ended:
                _read_to_end(ex, lambda s, d: cap.add("err" if s == 2 else "out", d), time.monotonic() + 5)
            rc = ex.exit_code()
        finally:
            ex.close()
        res = cap.result(rc, timed_out=not ended, oom=False, t0=t0)
        if res.status == ExecStatus.OK and res.returncode == 137 and res.wall_s < lim.wall_s:
            res.status = ExecStatus.MEMORY  # SIGKILL from the memory cgroup, not from us
        return res
