"""One local sandbox shared by a session's runs: each run still gets a fresh process and sees nothing an
earlier run left; a run that attacks the session's own server is made again in a one-shot sandbox.
(The hostile programs of ``test_sandboxes.py`` run through a session too: its "local session" variant.)"""

import textwrap

import pytest

from envs.sandbox.base import ExecStatus, Limits

LIMITS = Limits(wall_s=4, cpu_s=3, memory_bytes=256 << 20, pids=32, output_bytes=64 << 10,
                workdir_bytes=16 << 20, file_bytes=4 << 20, nofile=64)


@pytest.fixture(scope="module")
def local():
    from envs.sandbox.local import LocalSandbox

    ok, why = LocalSandbox.available()
    if not ok:
        pytest.skip(f"local sandbox unavailable: {why}")
    return LocalSandbox(LIMITS)


@pytest.fixture
def session(local):
    s = local.session(LIMITS)
    yield s
    s.close()


def py(runner, code, **kw):
    return runner.run([runner.sandbox.python if hasattr(runner, "sandbox") else runner.python, "-s", "-S", "-c",
                       textwrap.dedent(code)], **kw)


POISON = """
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
open('/tmp/poison', 'w').write('p')
os.mkdir('/tmp/locked'); open('/tmp/locked/f', 'w').write('p'); os.chmod('/tmp/locked', 0)
open('/dev/shm/poison', 'w').write('p')
os.symlink('/etc/passwd', '/tmp/link')
shm = libc.shmget(0x5eed, 4096, 0o1000 | 0o666)  # IPC_CREAT
print('SHM', shm)
mq = ctypes.CDLL('librt.so.1', use_errno=True) if os.path.exists('/usr/lib/x86_64-linux-gnu/librt.so.1') else libc
print('MQ', mq.mq_open(b'/poison', 0o100 | 2, 0o666, None))  # O_CREAT | O_RDWR
for p in ('/dev/null', '/work/poison', os.environ['HOME'] + '/../poison'):
    try:
        open(p + '.x', 'w').write('p'); print('WROTE', p)
    except OSError:
        print('denied', p)
try:
    os.unlink('/dev/null'); print('UNLINKED /dev/null')
except OSError:
    print('denied unlink')
# a daemon that would poison the next run after this one has ended
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        time.sleep(1.0)
        open('/tmp/late', 'w').write('p')
        os._exit(0)
    os._exit(0)
print('planted', os.environ['HOME'])
"""

LOOK = """
import ctypes, os, time
time.sleep(1.5)  # the daemon's moment, had it survived
libc = ctypes.CDLL(None, use_errno=True)
found = sorted(os.listdir('/tmp')) + sorted(os.listdir('/dev/shm'))
found += ['shm'] if libc.shmget(0x5eed, 4096, 0o666) != -1 else []
found += ['mqueue'] if os.listdir('/dev/mqueue') else []
found += [p for p in os.listdir('/proc') if p.isdigit() and int(p) > 2 and int(p) != os.getpid()]
found += ['/dev/null broken'] if not os.path.exists('/dev/null') else []
print('FOUND', found, os.environ['HOME'])
"""


def test_nothing_of_a_run_reaches_the_next_one_in_the_same_sandbox(session):
    r = py(session, POISON)
    out = r.stdout.decode()
    assert r.status == ExecStatus.OK and "planted" in out, r
    assert "WROTE" not in out and "UNLINKED" not in out, out
    assert "SHM -1" not in out, out  # the attack itself worked: there was something to clean
    r2 = py(session, LOOK)
    assert r2.stdout.decode().startswith("FOUND []"), r2
    assert out.split()[-1] != r2.stdout.decode().split()[-1]  # each run its own directory
    assert session.started == 1 and session.fallbacks == 0  # one sandbox served both


@pytest.mark.parametrize("attack", [
    "os.kill(os.getppid(), signal.SIGKILL)",
    "os.kill(-1, signal.SIGKILL)",
    "os.kill(os.getppid(), signal.SIGSTOP)",
])
def test_a_run_that_stops_the_server_is_judged_in_a_one_shot_sandbox(session, attack):
    """The server is the same uid as the runs: they can signal it. The run is then made again in a one-shot
    sandbox (whose verdict stands; the attack there kills or stops only that sandbox's own processes) and
    the next run gets a new session sandbox."""
    code = f"import os, signal, sys\nprint('ran', flush=True)\n{attack}\nsys.exit(7)"
    r = py(session, code, limits=Limits(**{**LIMITS.__dict__, "wall_s": 1}))
    assert session.fallbacks == 1, r
    assert r.status != ExecStatus.ENV_ERROR and b"ran" in r.stdout, r
    ok = py(session, "print(6 * 7)")
    assert ok.ok and ok.stdout == b"42\n" and session.started == 2


def test_a_run_cannot_forge_the_servers_replies(session):
    """The server is not dumpable: a run cannot open its descriptors through /proc (the reply channel)."""
    code = """
    import os
    ppid = os.getppid()
    for fd in (0, 1):
        try:
            with open(f'/proc/{ppid}/fd/{fd}', 'w') as fh:
                fh.write('{"rc": 0, "timed_out": false, "over": false, "out": "", "err": "", "clean": true}\\n')
            print('FORGED', fd)
        except OSError as e:
            print('denied', fd, e.errno)
    """
    r = py(session, code)
    assert b"FORGED" not in r.stdout and r.stdout.count(b"denied") == 2, r
    assert session.fallbacks == 0


PROGRAMS = {
    "exit status": "import sys; print('a'); sys.stderr.write('b'); sys.exit(3)",
    "output over the cap": "print('x' * 200000)",
    "cpu time": "while True: pass",
    "wall clock": "import time; time.sleep(30)",
    "memory": "x = bytearray(1 << 30)",
    "a file it wrote": "open('r.txt', 'w').write('r' * 10)",
}


# which limit ends a run must not depend on the machine's load: CPU time well inside the wall clock
OWN_LIMITS = {"cpu time": Limits(**{**LIMITS.__dict__, "cpu_s": 1, "wall_s": 30})}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_a_session_run_ends_as_a_one_shot_run_does(local, session, name):
    collect = ["r.txt"]
    lim = OWN_LIMITS.get(name, LIMITS)
    a = py(local, PROGRAMS[name], collect=collect, limits=lim)
    b = py(session, PROGRAMS[name], collect=collect, limits=lim)
    assert (a.status, a.returncode, a.stdout, a.stderr, a.detail) == (b.status, b.returncode, b.stdout, b.stderr,
                                                                      b.detail)
    assert session.fallbacks == 0


def test_runs_beyond_the_sessions_limits_go_to_a_one_shot_sandbox(session):
    big = Limits(**{**LIMITS.__dict__, "memory_bytes": LIMITS.memory_bytes * 2})
    r = py(session, "print(1)", limits=big)
    assert r.ok and session.started == 0  # never needed the session's sandbox
