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
Scripts that AgentBench runs "independently" (init scripts) enter the same namespaces and root with
``nsenter`` + ``chroot``. ``exec_isolated`` (the example script that computes a question's expected
answer, run before the agent acts) sees the episode's processes but a copy-on-write view of its files:
what it writes is thrown away. ``seal`` ends the agent's part: every process of the episode is killed,
and later ``exec`` calls (the check) run in a judge root, new namespaces over the agent's final files with
the pristine system (``envs.sandbox.judge_root``).

Host kernel state stays out of reach: /proc/sys is read-only (and /proc/sysrq-trigger where the kernel
has one), there is no /sys, and every process of the episode and of the judge carries a seccomp filter
that denies new user namespaces (``envs.sandbox.seccomp``: in one, root could mount the cgroup
hierarchies and lift the episode's limits).
"""

from __future__ import annotations

import os
import resource
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

from envs.rootfs import ensure_rootfs
from envs.sandbox import judge_root
from envs.sandbox.base import ExecStatus, Limits
from envs.sandbox.host import Cgroup
from envs.sandbox.seccomp import no_user_namespaces
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
        self.sealed = False
        try:
            self._seccomp = no_user_namespaces()
        except OSError as exc:
            raise HarnessError(f"os sandbox: {exc}") from None
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
        for d in ("upper", "work", "merged", "judge"):  # judge: the judge's tmpfs mounts there (``seal``)
            (self.dir / d).mkdir()
        # the episode's /dev made here (nodes, links) and bound in once: binding the host's nodes one by one
        # was 18 processes of the shell's start (a third of it)
        dev = judge_root.make_dev(self.dir / "dev")
        setup = f"""set -e
mount -t overlay overlay -o lowerdir={self.rootfs},upperdir={self.dir}/upper,workdir={self.dir}/work {self.merged}
{_system_mounts(self.merged, dev)}
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

    def _enter_root(self, root: Path | None = None) -> str:
        """chroot into the episode's root (or ``root``) with Docker's capabilities and a clean environment;
        in the judge, from the pristine /usr and with the judge's environment."""
        caps = ",".join(["-all"] + [f"+{c}" for c in KEEP_CAPS])
        if self.sealed:
            usr, env = f"/{judge_root.JUDGE_DIR}/usr", [f"{k}={v}" for k, v in judge_root.JUDGE_ENV.items()]
        else:
            usr, env = "/usr", ENV
        return (f"chroot {root or self.merged} {usr}/bin/setpriv --bounding-set {caps} --inh-caps -all -- "
                f"{usr}/bin/env -i {' '.join(env)}")

    def _preexec(self) -> None:
        self.cg.join_self()
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.limits.file_bytes,) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (_nofile_cap(self.limits.nofile),) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        self._seccomp.install()

    def _namespace_init(self) -> int:
        kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        if not kids:
            raise HarnessError("os sandbox: the namespace's init process is gone")
        return int(kids[0])

    def close(self) -> None:
        if self.cg is not None:
            self.cg.kill_all()
        self._end_process()
        if self.cg is not None:
            self.cg.remove()
            self.cg = None
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True, env=SETUP_ENV)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _end_process(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        for s in (self.proc.stdin, self.proc.stdout):
            try:
                if s is not None:
                    s.close()
            except OSError:
                pass

    # -- the judge ----------------------------------------------------------------------------------
    def _overlay(self, name: str, lower: str, seed=None) -> Path:
        """A throw-away overlay over ``lower`` at ``self.dir/name/root`` (on the episode's tmpfs, so it
        goes with it); ``seed(upper)`` fills its upper layer first."""
        d = self.dir / name
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True)
        if seed is not None:
            seed(d / "upper")
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={d}/upper,workdir={d}/work", str(d / "root")],
                       check=True, capture_output=True, env=SETUP_ENV)
        return d / "root"

    def exec_isolated(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` among the episode's processes (same PID, network, IPC and UTS namespaces) but on a
        copy-on-write view of its files: what it writes is thrown away. For the example script, before the
        agent acts: the expected answer of the state the init scripts left, without showing the agent any
        side effect of computing it."""
        if self.sealed or not self.alive:
            return None, "", ExecStatus.ENV_ERROR
        name = f"view-{secrets.token_hex(4)}"
        try:
            root = self._overlay(name, f"{self.dir}/upper:{self.rootfs}")
            dev = judge_root.make_dev(self.dir / name / "dev")
        except (OSError, subprocess.CalledProcessError) as exc:
            return None, f"os sandbox: the isolated view did not mount: {exc}", ExecStatus.ENV_ERROR
        try:
            script = (f"sh -ec {shlex.quote(_system_mounts(root, dev))} || {{ echo '{SETUP_FAILED}' >&2; exit 199; }}\n"
                      f"exec {self._enter_root(root)} {shlex.join(argv)}")
            return self._run_process(["nsenter", "-t", str(self.ns_pid), "-p", "-i", "-u", "-n", "--",
                                      "unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                                     timeout)
        finally:
            subprocess.run(["umount", "-l", str(root)], capture_output=True, env=SETUP_ENV)
            shutil.rmtree(self.dir / name, ignore_errors=True)

    def seal(self) -> None:
        """End the agent's part: kill every process of the episode (none may touch the evidence during the
        check) and start the judge: new namespaces whose root is the agent's final filesystem with the
        pristine system (``envs.sandbox.judge_root``); later ``exec`` calls run there."""
        if self.sealed:
            return
        self.sealed = True
        self.cg.kill_all()
        self._end_process()
        if self.cg.pids():
            raise HarnessError("os sandbox: processes of the episode outlived it")
        try:
            # the judge's layers on a tmpfs of their own (its mount point made before the agent acted): an
            # episode that filled its own tmpfs must not stop the judge
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={JUDGE_TMPFS_BYTES},mode=0700", "tmpfs",
                            str(self.dir / "judge")], check=True, capture_output=True, env=SETUP_ENV)
            binds: list = []
            self.judge_root = root = self._overlay(
                "judge", f"{self.dir}/upper:{self.rootfs}",
                seed=lambda up: binds.extend(judge_root.seed_upper(up, self.rootfs, self.dir / "upper")))
            dev = judge_root.make_dev(self.dir / "judge" / "dev")
        except (OSError, subprocess.CalledProcessError) as exc:
            raise HarnessError(f"os sandbox: the judge's root could not be made: {exc}") from None
        lines = [f"mount --bind {src} {root}/{rel}\nmount -o remount,bind,ro {root}/{rel}" for src, rel in binds]
        setup = "\n".join(["set -e", *lines, _system_mounts(root, dev), "hostname sandbox 2>/dev/null || true",
                           "exec sleep infinity"])
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--ipc", "--uts", "--net", "--fork", "--kill-child", "--propagation",
             "private", "/bin/sh", "-c", setup],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=self._preexec,
            start_new_session=True, env=SETUP_ENV)
        deadline = time.monotonic() + 30
        while True:  # ready when the namespace's init has become ``sleep``
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode("utf-8", "replace")
                raise HarnessError(f"os sandbox: the judge did not start: {err[-300:]!r}")
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if kids and _comm(int(kids[0])) == "sleep":
                self.ns_pid = int(kids[0])
                break
            if time.monotonic() > deadline:
                raise HarnessError("os sandbox: the judge did not start within 30 s")
            time.sleep(0.005)

    # -- the transport: pipes to the shell process ---------------------------------------------------
    @property
    def alive(self) -> bool:
        return not self.sealed and self.proc is not None and self.proc.poll() is None

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
        """Kill every process of the episode (or of the judge) but the shell (the judge's holder) itself
        and its unshare parent."""
        keep = {self.proc.pid, getattr(self, "ns_pid", -1)}
        for pid in self.cg.pids() - keep:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    # -- independent processes ----------------------------------------------------------------------
    def exec(self, argv: Sequence[str], timeout: float | None = None) -> tuple[int | None, str, ExecStatus]:
        """Run ``argv`` as a separate process inside the episode (same namespaces, root and limits); after
        ``seal``, in the judge."""
        if self.proc is None or self.proc.poll() is not None:
            return None, "", ExecStatus.ENV_ERROR
        root = self.judge_root if self.sealed else self.merged
        return self._run_process(["nsenter", "-t", str(self.ns_pid), "-m", "-p", "-i", "-u", "-n", "--",
                                  *self._enter_root(root).split(), *argv], timeout)

    def _run_process(self, cmd: list[str], timeout: float | None) -> tuple[int | None, str, ExecStatus]:
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
            text = out.read(self.limits.output_bytes).decode("utf-8", "replace")
            if rc == 199 and SETUP_FAILED in text:
                return None, text[-300:], ExecStatus.ENV_ERROR
            return rc, text, status


SETUP_FAILED = "cycleqd: the isolated view did not start"
JUDGE_TMPFS_BYTES = 256 << 20  # the judge's layers: pristine /etc copies, links, what the check writes


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _system_mounts(root: Path, dev: Path | None = None) -> str:
    """Shell lines that mount /proc in ``root`` (its sys read-only: the host's kernel settings; the
    sysrq trigger too where the kernel has one) and a minimal /dev (``dev``: one made already)."""
    devs = " ".join(DEVICES)
    proc = f"""mount -t proc proc {root}/proc
mount --bind {root}/proc/sys {root}/proc/sys
mount -o remount,bind,ro {root}/proc/sys
if [ -e {root}/proc/sysrq-trigger ]; then mount --bind /dev/null {root}/proc/sysrq-trigger; fi"""
    if dev is not None:
        return f"{proc}\nmount --bind {dev} {root}/dev"
    return proc + f"""
mount -t tmpfs -o size=1m,mode=755 tmpfs {root}/dev
for d in {devs}; do touch {root}/dev/$d; mount --bind /dev/$d {root}/dev/$d; done
ln -s /proc/self/fd {root}/dev/fd; ln -s /proc/self/fd/0 {root}/dev/stdin
ln -s /proc/self/fd/1 {root}/dev/stdout; ln -s /proc/self/fd/2 {root}/dev/stderr
mkdir -p {root}/dev/shm {root}/dev/pts"""
