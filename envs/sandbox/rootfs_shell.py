"""An OS-task episode: a persistent root shell in a throw-away overlay of the cached root filesystem.

Why not bubblewrap: OS tasks write to /usr and /etc, add users and switch to them, which needs real uids
inside, and bubblewrap 0.8 has no overlays. So each episode gets (as the machine notes measured):
``unshare --mount --pid --net --ipc --uts --fork`` -> an overlay (lower = the cached rootfs, upper = a
size-limited tmpfs) -> /proc, a minimal /dev -> ``chroot`` -> ``setpriv`` with Docker's default
capability set (chown, dac_override, fowner, fsetid, kill, setgid, setuid, setpcap, net_bind_service,
audit_write, setfcap; no sys_admin, sys_chroot, sys_module, sys_ptrace, net_admin, mknod...) -> bash.
Every process is in the episode's cgroup (pids, memory) and dies with it. Writes land in the episode's
upper layer only; the cached rootfs and the host never change.

Commands run in the persistent shell (cwd, variables, ``su`` persist), stdin from /dev/null, output up
to a sentinel line; a command that outlives its timeout has its processes killed and the shell goes on.
Scripts that AgentBench runs "independently" (init, checks, the example script) enter the same
namespaces and root with ``nsenter`` + ``chroot``.
"""

from __future__ import annotations

import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from envs.rootfs import ensure_rootfs
from envs.sandbox.base import ExecStatus, Limits
from envs.sandbox.local import Cgroup
from envs.sandbox.shell import InteractiveShell, ShellOutput  # noqa: F401 - ShellOutput re-exported
from harness.errors import HarnessError

KEEP_CAPS = ("chown", "dac_override", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
             "net_bind_service", "audit_write", "setfcap")
ENV = ["HOME=/root", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=dumb",
       "LANG=C.UTF-8", "USER=root"]
# the host-side setup and every exec (unshare, nsenter, mount, chroot, setpriv) get a clean environment too:
# the harness's own (LD_PRELOAD set by vLLM's CPU build, tokens, proxies) must neither leak in nor break
# the host tools
SETUP_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def _nofile_cap(n: int) -> int:
    """No higher than this process's hard limit (raising it needs CAP_SYS_RESOURCE, which a container
    may lack)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return n if hard == resource.RLIM_INFINITY else min(n, hard)


class RootfsShell(InteractiveShell):
    """One episode's environment. Use as a context manager; ``close()`` destroys everything.

    ``rootfs``: the root filesystem (default: the cached one, built on first use); ``network``: keep the
    host's network (default: a network namespace with only a loopback)."""

    def __init__(self, rootfs: str | Path | None = None, limits: Limits | None = None, *, network: bool = False):
        super().__init__(rootfs, limits)
        if os.geteuid() != 0:
            raise HarnessError("os sandbox: needs root (namespaces, overlay, chroot, cgroups)")
        for tool in ("unshare", "nsenter", "chroot", "mount"):
            if not shutil.which(tool):
                raise HarnessError(f"os sandbox: {tool} not found (util-linux)")
        self.rootfs = Path(rootfs) if rootfs else ensure_rootfs()
        if not (self.rootfs / "usr" / "bin" / "setpriv").exists():
            raise HarnessError(f"os sandbox: {self.rootfs} is not a root filesystem with setpriv (util-linux)")
        self.dir = Path(tempfile.mkdtemp(prefix="cycleqd-os-"))
        self.merged = self.dir / "merged"
        self.cg = None
        self.proc = None
        try:
            self._start(network)
        except BaseException:
            self.close()
            raise

    # -- lifecycle ----------------------------------------------------------------------------------
    def _start(self, network: bool) -> None:
        lim = self.limits
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={lim.workdir_bytes},mode=0700", "tmpfs", str(self.dir)],
                       check=True, capture_output=True, env=SETUP_ENV)
        for d in ("upper", "work", "merged"):
            (self.dir / d).mkdir()
        m = self.merged
        devs = " ".join(DEVICES)
        setup = f"""set -e
mount -t overlay overlay -o lowerdir={self.rootfs},upperdir={self.dir}/upper,workdir={self.dir}/work {m}
mount -t proc proc {m}/proc
mount -t tmpfs -o size=1m,mode=755 tmpfs {m}/dev
for d in {devs}; do touch {m}/dev/$d; mount --bind /dev/$d {m}/dev/$d; done
ln -s /proc/self/fd {m}/dev/fd; ln -s /proc/self/fd/0 {m}/dev/stdin
ln -s /proc/self/fd/1 {m}/dev/stdout; ln -s /proc/self/fd/2 {m}/dev/stderr
mkdir -p {m}/dev/shm {m}/dev/pts
hostname sandbox 2>/dev/null || true
{"ip link set lo up 2>/dev/null || true" if not network else ""}
exec {self._enter_root()} /bin/bash --noprofile --norc
"""
        self.cg = Cgroup(f"os-{os.getpid()}-{secrets.token_hex(6)}", lim)
        net = [] if network else ["--net"]
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--ipc", "--uts", *net, "--fork", "--kill-child", "--propagation", "private",
             "/bin/sh", "-c", setup],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=self._preexec,
            start_new_session=True, env=SETUP_ENV)
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        first = self.run("echo ready", timeout=30)
        if first.output.strip() != "ready":
            raise HarnessError(f"os sandbox: the episode shell did not start: {first.output[-300:]!r}")
        self.ns_pid = self._namespace_init()

    def _enter_root(self) -> str:
        caps = ",".join(["-all"] + [f"+{c}" for c in KEEP_CAPS])
        return (f"chroot {self.merged} /usr/bin/setpriv --bounding-set {caps} --inh-caps -all -- "
                f"/usr/bin/env -i {' '.join(ENV)}")

    def _preexec(self) -> None:
        self.cg.join_self()
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limits.file_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_nofile_cap(self.limits.nofile),) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    def _namespace_init(self) -> int:
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        if not kids:
            raise HarnessError("os sandbox: the namespace's init process is gone")
        return int(kids[0])

    def close(self) -> None:
        if self.cg is not None:
            self.cg.kill_all()
        if self.proc is not None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            self.proc.wait()
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    s.close()
                except OSError:
                    pass
        if self.cg is not None:
            self.cg.remove()
            self.cg = None
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, env=SETUP_ENV)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- the transport: pipes to the shell process ---------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def _recv(self, timeout: float) -> bytes | None:
        r, _, _ = select.select([self._fd], [], [], timeout)
        if not r:
            return None
        try:
            return os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return None

    def _kill_foreground(self) -> None:
        """Kill every process of the episode but the shell itself and its unshare parent."""
        keep = {self.proc.pid, getattr(self, "ns_pid", -1)}
        for pid in self.cg.pids() - keep:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- independent processes ----------------------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` as a separate process inside the episode (same namespaces, root and limits)."""
        if not self.alive:
            return None, "", ExecStatus.ENV_ERROR
        cmd = ["nsenter", "-t", str(self.ns_pid), "-m", "-p", "-i", "-u", "-n", "--",
               *self._enter_root().split(), *argv]
        # output goes to a file, not a pipe: a script that leaves background jobs behind (``sleep 60 &``)
        # is finished when it exits, as in the Docker shell; stdout and stderr are merged, as there
        with tempfile.TemporaryFile() as out:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 preexec_fn=self._preexec, env=SETUP_ENV)
            try:
                rc, status = p.wait(timeout=timeout or self.limits.wall_s), ExecStatus.OK
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                self._kill_foreground()
                rc, status = None, ExecStatus.TIMEOUT
            out.seek(0)
            return rc, out.read(self.limits.output_bytes).decode("utf-8", "replace"), status
