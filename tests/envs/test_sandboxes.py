"""Hostile programs in the local and the Docker sandbox: each is contained, reported, and leaves the host
untouched."""

import os
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from envs.sandbox.base import ExecStatus, Limits

LIMITS = Limits(wall_s=4, cpu_s=3, memory_bytes=256 << 20, pids=32, output_bytes=64 << 10,
                workdir_bytes=16 << 20, file_bytes=4 << 20, nofile=64)


def docker_sandbox(limits):
    from envs.sandbox.docker import DockerSandbox
    from harness.errors import HarnessError

    try:
        return DockerSandbox(limits=limits)
    except HarnessError as exc:
        pytest.skip(f"docker sandbox unavailable: {exc}")


class SessionRuns:
    """A local sandbox whose runs all go through one session (``envs.sandbox.local_session``): the
    hostile programs below then run one after another in the same sandbox, each leaving its worst."""

    def __init__(self, local):
        self.local, self.python = local, local.python
        self.session = local.session(LIMITS)

    def run(self, argv, **kw):
        return self.session.run(argv, **kw)


@pytest.fixture(scope="module", params=["local", "local session", "docker"])
def sandbox(request):
    if request.param == "docker":
        if os.geteuid() != 0 and not os.environ.get("DOCKER_HOST"):
            pytest.skip("docker: no engine and not root")
        yield docker_sandbox(LIMITS)
        return
    from envs.sandbox.local import LocalSandbox

    ok, why = LocalSandbox.available()
    if not ok:
        pytest.skip(f"local sandbox unavailable: {why}")
    if request.param == "local session":
        runs = SessionRuns(LocalSandbox(LIMITS))
        yield runs
        runs.session.close()
        return
    yield LocalSandbox(LIMITS)


@pytest.fixture(scope="module")
def host_secret(tmp_path_factory):
    p = tmp_path_factory.mktemp("secret") / "host_secret.txt"
    p.write_text("HOST-SECRET-7f3a")
    return p


@pytest.fixture
def listener():
    """A TCP listener on the host's loopback: the sandbox must not reach it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


def py(sandbox, code, **kw):
    return sandbox.run([sandbox.python, "-c", textwrap.dedent(code)], **kw)


def _sandbox_candidates() -> dict[str, str]:
    """Live processes of uid 65534 in a PID namespace other than the host's (where every sandboxed process
    runs; the host-side workers of other suites that run as nobody do not count), not in another process's
    sandbox cgroup. Not zombies: bubblewrap, started as that uid, leaves one helper to the host's init to
    reap (as it did as root, where this listing did not see it), and a zombie runs nothing."""
    out = subprocess.run(["ps", "-eo", "pid,user,stat,args"], capture_output=True, text=True).stdout
    host_ns = os.readlink("/proc/self/ns/pid")
    live = {}
    for line in out.splitlines()[1:]:
        pid, user, stat = line.split()[:3]
        if user not in ("nobody", "65534") or stat.startswith("Z"):
            continue
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == host_ns:
                continue
            cg = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            continue
        if "/cycleqd/run-" in cg and f"/cycleqd/run-{os.getpid()}-" not in cg:
            continue
        if "/cycleqd/ses-" in cg and (f"/cycleqd/ses-{os.getpid()}-" not in cg or _session_process(pid)):
            continue  # another process's session, or this one's bubblewrap, init and job server
        live[pid] = line
    return live


def _session_process(pid: str) -> bool:
    """Whether ``pid`` is a session's own: bubblewrap (and its init) started for the job server, or the
    server itself; every run's process ends before the session answers."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[-2:] == [b"/work/job_server.py", b""] and (b"bwrap" in argv[0] or argv[-4:-2] == [b"-s", b"-S"])


def sandbox_processes(settle_s: float = 2.0) -> list[str]:
    """The listing above, counting only processes still there after ``settle_s``: a process caught while it
    exits has already left its cgroup (the kernel shows it in the root one) and is no leftover. Seen under
    load, beside an experiment whose code sandboxes were ending; a real leftover (a daemon) stays."""
    live = _sandbox_candidates()
    deadline = time.monotonic() + settle_s
    while live and time.monotonic() < deadline:
        time.sleep(0.1)
        live = {pid: line for pid, line in _sandbox_candidates().items() if pid in live}
    return list(live.values())


def test_a_normal_program_runs(sandbox):
    r = py(sandbox, "import os, sys; print(os.getuid(), open('in.txt').read()); sys.exit(3)", files={"in.txt": "hello"})
    assert r.status == ExecStatus.OK and r.returncode == 3 and r.stdout == b"65534 hello\n"


HOSTILE = {
    "fork bomb (python)": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", None),
    "fork bomb (shell)": (None, ["bash", "-c", ":(){ :|:& };:; sleep 2"]),
    "thread bomb": ("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(100,)).start()", None),
    "memory bomb (one block)": ("x = bytearray(2 << 30)", None),
    "memory bomb (creeping)": ("x = []\nwhile True:\n    x.append(b'x' * (1 << 20))", None),
    "busy loop": ("while True:\n    pass", None),
    "sleep forever": ("import time\ntime.sleep(10**6)", None),
    "100 MB of output": ("import sys\nfor _ in range(100):\n    sys.stdout.write('x' * (1 << 20))", None),
    "stderr flood": ("import sys\nwhile True:\n    sys.stderr.write('y' * 65536)", None),
    "zombie spawning": ("import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        os._exit(0)\ntime.sleep(0.5)", None),
    "daemon that outlives the command": (None, ["bash", "-c", "setsid sleep 1000 >/dev/null 2>&1 & nohup sleep 1000 >/dev/null 2>&1 & echo started"]),
    "kill the parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)", None),
    "kill everything it can see": (None, ["bash", "-c", "kill -9 -1; echo survived"]),
    "huge file": ("open('big', 'wb').write(b'0' * (64 << 20))", None),
    "fill the workdir": ("i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'0' * (1 << 20)); i += 1", None),
    "too many open files": ("fs = [open('/dev/null') for _ in range(10000)]", None),
    "read host files": ("import os\nfor p in ['HOST_SECRET', '/etc/shadow', '/root/.bashrc', '/work/main/README.md', '/proc/1/environ']:\n"
                        "    try:\n        print(p, open(p).read()[:50])\n    except Exception as e:\n        print(p, 'DENIED', type(e).__name__)", None),
    "write outside the workdir": ("import os\nopen('/tmp/cycleqd_pwned', 'w').write('x')\nfor p in ['/usr/pwned', '/etc/pwned', '/bin/pwned', '/pwned']:\n    try:\n"
                                  "        open(p, 'w').write('x'); print('WROTE', p)\n    except Exception as e:\n        print('DENIED', p)", None),
    "become root": ("import os\nos.setuid(0)", None),
    "mount and chroot": (None, ["bash", "-c", "mount -t tmpfs x /usr && echo MOUNTED; /usr/sbin/chroot / true && echo CHROOTED; exit 0"]),
    "ptrace a process": ("import ctypes\nlibc = ctypes.CDLL(None)\nprint('PTRACE', [libc.ptrace(16, p, 0, 0) for p in (1, 2)])", None),
    "see host processes": ("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))", None),
    "network to host loopback": (None, None),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_is_contained(sandbox, listener, name, host_secret):
    port, hits = listener
    code, argv = HOSTILE[name]
    if code:
        code = code.replace("HOST_SECRET", str(host_secret))
    if name == "network to host loopback":
        code = (f"import socket\nfor host in ['127.0.0.1', 'localhost', '::1']:\n    try:\n"
                f"        socket.create_connection((host, {port}), timeout=1); print('CONNECTED', host)\n"
                f"    except Exception as e:\n        print('BLOCKED', host, type(e).__name__)")
    t0 = time.monotonic()
    r = sandbox.run(argv, files={}) if argv else py(sandbox, code)
    elapsed = time.monotonic() - t0
    out = r.stdout + r.stderr
    # contained in time, reported, harness fine
    assert elapsed < LIMITS.wall_s + 5, f"{name}: {elapsed:.1f}s"
    assert r.status != ExecStatus.ENV_ERROR, r.detail
    assert len(r.stdout) + len(r.stderr) <= LIMITS.output_bytes + 100
    # no process of the run survives it
    time.sleep(0.1)
    assert not sandbox_processes(), sandbox_processes()
    # the host is untouched
    assert not hits, "the sandbox reached a host listener"
    assert not Path("/usr/pwned").exists() and not Path("/pwned").exists()
    assert not Path("/tmp/cycleqd_pwned").exists()  # the sandbox's /tmp is its own
    assert b"HOST-SECRET" not in out and b"WROTE" not in out and b"CONNECTED" not in out
    assert b"# CycleQD harness" not in out
    assert b"MOUNTED" not in out and b"CHROOTED" not in out
    if name == "100 MB of output" or name == "stderr flood":
        assert r.status == ExecStatus.OUTPUT_LIMIT and out.endswith(b"[output truncated by the sandbox]")
    if name in ("busy loop", "sleep forever"):
        assert r.status == ExecStatus.TIMEOUT
    if name == "see host processes":
        assert len(eval(r.stdout)) < 10  # its own PID namespace: a handful of processes, not the host's
    if name == "write outside the workdir":
        assert out.count(b"DENIED") == 4  # the sandbox's root is read-only too, not just the host's


def test_the_host_still_works_after_all_that(sandbox):
    r = py(sandbox, "print(sum(range(10)))")
    assert r.ok and r.stdout == b"45\n"


def test_collected_files_are_regular_files_of_the_run_only(sandbox, host_secret):
    """``collect`` reads what the run left, as the harness (root): a link to a host file, a directory
    or a missing file comes back as None, never the file it points at."""
    script = (f"echo mine > ok.txt; ln -s {host_secret} link.txt; mkdir dir.txt; ln -s /etc sub; "
              f"ln -s {host_secret.parent} up")
    r = sandbox.run(["bash", "-c", script], files={}, collect=["ok.txt", "link.txt", "dir.txt", "missing.txt",
                                                               "sub/passwd", f"up/{host_secret.name}"])
    assert r.status == ExecStatus.OK, r
    assert r.detail["files"] == {"ok.txt": b"mine\n", "link.txt": None, "dir.txt": None, "missing.txt": None,
                                 "sub/passwd": None, f"up/{host_secret.name}": None}


# -- issue 13: lifting limits, host state, the next run ---------------------------------------------------
SWAPPINESS = Path("/proc/sys/vm/swappiness").read_text().strip()  # written back as is: a success changes nothing
# the reproduction: a user namespace of its own, the v1 cgroups mounted there, the limits raised
UNSHARE_CGROUPS = """
import ctypes, glob, os, time
libc = ctypes.CDLL(None, use_errno=True)
uid = os.getuid()
if libc.unshare(0x10000000 | 0x20000 | 0x02000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWCGROUP
    print("UNSHARE-DENIED", ctypes.get_errno())
else:
    print("UNSHARED")
    open("/proc/self/uid_map", "w").write(f"0 {uid} 1")
    for ctl in ("pids", "memory"):
        os.makedirs(f"/tmp/cg-{ctl}", exist_ok=True)
        print("MOUNT", ctl, libc.mount(b"none", f"/tmp/cg-{ctl}".encode(), b"cgroup", 0, ctl.encode()))
    for path in glob.glob("/tmp/cg-*/**/pids.max", recursive=True) + glob.glob("/tmp/cg-*/**/memory.limit_in_bytes", recursive=True):
        try:
            open(path, "w").write("max" if "pids" in path else str(1 << 30)); print("RAISED", path)
        except OSError as e:
            print("DENIED", path, e.errno)
n = 0
for _ in range(60):
    try:
        if os.fork() == 0:
            time.sleep(2); os._exit(0)
        n += 1
    except OSError:
        break
print("FORKED", n)
"""
LIFTS = {
    "lift limits: own user namespace, cgroups mounted and raised": (UNSHARE_CGROUPS, ["RAISED", "UNSHARED"]),
    "lift limits: raise the rlimits": ("import resource\nfor r in (resource.RLIMIT_NOFILE, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE):\n"
                                       "    s, h = resource.getrlimit(r)\n    if h == resource.RLIM_INFINITY:\n        continue  # nothing to lift (Docker bounds CPU by the wall clock)\n    try:\n        resource.setrlimit(r, (h * 2 + 10, h * 2 + 10)); print('RAISED', r)\n"
                                       "    except (ValueError, OSError):\n        print('kept', r)", ["RAISED"]),
    "lift limits: write the cgroup files": ("import glob\nfor p in glob.glob('/sys/fs/cgroup/**/pids.max', recursive=True) + glob.glob('/sys/fs/cgroup/**/memory.limit_in_bytes', recursive=True) + glob.glob('/sys/fs/cgroup/**/memory.max', recursive=True):\n"
                                            "    try:\n        open(p, 'w').write('max'); print('RAISED', p)\n    except OSError:\n        print('denied', p)", ["RAISED"]),
    # issue 13, item 7 and its relatives
    "change host state: a kernel setting": (f"open('/proc/sys/vm/swappiness', 'w').write('{SWAPPINESS}'); print('SYSCTL')", ["SYSCTL"]),
    "change host state: the sysrq trigger": ("open('/proc/sysrq-trigger', 'w').write('h'); print('SYSRQ')", ["SYSRQ"]),
    "change host state: remount the root read-write": ("import ctypes\nlibc = ctypes.CDLL(None)\n"
                                                       "print('REMOUNTED' if libc.mount(None, b'/', None, 32 | 33554432 | 4096, None) == 0 else 'denied')", ["REMOUNTED"]),
    "escape: enter the host's mount namespace": ("import os\nfd = os.open('/proc/1/ns/mnt', os.O_RDONLY)\n"
                                                 "import ctypes\nprint('SETNS' if ctypes.CDLL(None).setns(fd, 0) == 0 else 'denied')", ["SETNS"]),
}


@pytest.mark.parametrize("name", sorted(LIFTS))
def test_limits_and_host_state_out_of_reach(sandbox, name):
    code, markers = LIFTS[name]
    r = py(sandbox, code)
    out = r.stdout + r.stderr
    assert r.status != ExecStatus.ENV_ERROR, r.detail
    for m in markers:
        assert m.encode() not in out, (name, out[-500:])
    if "FORKED" in code:
        assert int(out.split(b"FORKED")[1].split()[0]) < LIMITS.pids, out[-300:]
    assert Path("/proc/sys/vm/swappiness").read_text().strip() == SWAPPINESS
    time.sleep(0.1)
    assert not sandbox_processes(), sandbox_processes()


def test_nothing_reaches_the_next_run(sandbox):
    """Poison the next sample: a run's /tmp, /dev/shm and workdir die with it."""
    r = sandbox.run(["bash", "-c", "echo p > /tmp/poison; echo p > /dev/shm/poison; echo p > /work/poison; "
                                   "echo p > $HOME/.poison 2>/dev/null; echo planted"], files={})
    assert b"planted" in r.stdout, r
    r = sandbox.run(["bash", "-c", "cat /tmp/poison /dev/shm/poison /work/poison $HOME/.poison 2>/dev/null; echo end"], files={})
    assert r.stdout == b"end\n", r


def test_no_cgroup_mount_or_container_is_left_behind(sandbox, monkeypatch):
    """After hostile runs (the cgroup attack among them), nothing of this process's runs stays on the
    host: no cgroup directory, no mount, no directory (local), no container or volume (Docker)."""
    import envs.sandbox.local as local

    made = []
    real_mkdtemp = local.tempfile.mkdtemp
    monkeypatch.setattr(local.tempfile, "mkdtemp", lambda **kw: made.append(real_mkdtemp(**kw)) or made[-1])
    mine = {"label": f"cycleqd.pid={os.getpid()}"}
    earlier: tuple[set, set] = (set(), set())
    if not isinstance(sandbox, local.LocalSandbox):
        from envs.docker_engine import client

        # long-lived engine objects of this process made by earlier tests (a session's MariaDB server
        # container) are not this test's runs
        earlier = ({c.id for c in client().containers.list(all=True, filters=mine)},
                   {v.name for v in client().volumes.list(filters=mine)})
    session = isinstance(sandbox, SessionRuns)
    if session:
        sandbox.session.close()  # the next run starts the session's sandbox again, under the patch
    py(sandbox, UNSHARE_CGROUPS)
    sandbox.run(["bash", "-c", "mkdir -p /work/d && (sleep 100 &) ; echo x"], files={"a/b.txt": "x"})
    if session:
        sandbox.session.close()
    left = [str(p) for me in (f"run-{os.getpid()}-", f"ses-{os.getpid()}-")
            for p in [*Path("/sys/fs/cgroup").glob(f"*/cycleqd/{me}*"), *Path("/sys/fs/cgroup").glob(f"cycleqd/{me}*")]]
    assert not left, left
    if session:
        assert made  # one sandbox, or a second one if the cgroup attack broke the first
        mounts = Path("/proc/self/mountinfo").read_text()
        assert not [d for d in made if d in mounts or os.path.exists(d)], made
    elif isinstance(sandbox, local.LocalSandbox):
        assert len(made) == 2
        mounts = Path("/proc/self/mountinfo").read_text()
        assert not [d for d in made if d in mounts or os.path.exists(d)], made
    else:
        assert not [c for c in client().containers.list(all=True, filters=mine) if c.id not in earlier[0]]
        assert not [v for v in client().volumes.list(filters=mine) if v.name not in earlier[1]]


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "polling fallback"])
def test_wait_exit_wakes_on_exit_and_times_out(monkeypatch, pidfd):
    from envs.sandbox.base import wait_exit

    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    quick = subprocess.Popen(["sleep", "0.05"])
    t0 = time.monotonic()
    assert wait_exit(quick, 10) and quick.returncode == 0 and time.monotonic() - t0 < 5
    slow = subprocess.Popen(["sleep", "30"])
    try:
        assert not wait_exit(slow, 0.2) and slow.poll() is None
    finally:
        slow.kill()
        slow.wait()
