"""Runs inside one local sandbox for a whole evaluation (standard library only): starts each job as a
fresh, limited process, one at a time, and leaves nothing of it behind for the next.

Why: a bubblewrap start, its tmpfs and its cgroups cost about 30 ms, twice the sandboxed program's own
Python start; the coding judge paid them for every part of every completion. A session
(``envs.sandbox.local_session``) starts the sandbox once and sends this server one job per line.

Protocol (one JSON object per line on stdin, one reply per line on stdout):
  request: {"dir": name under /work, "argv": [...], "env": {...}, "wall": s, "cpu": s, "fsize": bytes,
            "nofile": n, "as": bytes, "out": bytes of stdout + stderr kept}
  reply:   {"rc": int | null, "timed_out": bool, "over": bool, "out": base64, "err": base64,
            "clean": bool (nothing of the job is left: no process, no System V or POSIX IPC object)}

A job is a new process (fork + exec, as bubblewrap would start it) in its own session, with its own
rlimits, its stdin /dev/null, its output read here with a cap. When it ends (or times out, or writes too
much), every other process of the sandbox is killed (``kill(-1)``: all but this server and the namespace's
init) before the reply, so a background child cannot reach the next job. The server makes itself
non-dumpable, so jobs (the same uid) cannot open its descriptors through /proc or ptrace it. A job can
still signal it; the harness then sees the channel close and judges that job again in a one-shot
sandbox. Files (/work/<job>, /tmp, /dev/shm) are wiped by the harness from outside, as root.
"""

import base64
import ctypes
import json
import os
import resource
import select
import signal
import subprocess
import sys
import time

_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE = 4
IPC_RMID = 0
ME = os.getpid()


def others():
    """Processes of this PID namespace other than its init (1) and this server."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (1, ME):
            out.append(int(name))
    return out


def kill_others(job=None):
    """Kill every other process of the sandbox and wait until none is listed. The job (this server's
    child) is reaped through its ``Popen``, keeping its exit status; orphans are reaped by init."""
    for _ in range(400):
        if job is not None:
            job.poll()
        if not others():
            return True
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.002)
    return not others()


def clear_ipc():
    """Remove the System V IPC objects and POSIX message queues the job left (this IPC namespace is
    the sandbox's own, so every object in it is a job's)."""
    ok = True
    for kind, call in (("shm", lambda i: _LIBC.shmctl(i, IPC_RMID, None)),
                       ("sem", lambda i: _LIBC.semctl(i, 0, IPC_RMID)),
                       ("msg", lambda i: _LIBC.msgctl(i, IPC_RMID, None))):
        try:
            with open("/proc/sysvipc/" + kind) as fh:
                lines = fh.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 1 and call(int(fields[1])) != 0:
                ok = False
    try:
        for name in os.listdir("/dev/mqueue"):
            os.unlink("/dev/mqueue/" + name)
    except FileNotFoundError:
        pass
    except OSError:
        ok = False
    return ok


def keep(buf, chunk, cap, total):
    """Append what fits of ``chunk`` under ``cap`` bytes of output in all; the new total written."""
    if cap > total:
        buf += chunk[:cap - total]
    return total + len(chunk)


def run(req):
    cap = int(req["out"])
    lim = [(resource.RLIMIT_AS, int(req["as"])), (resource.RLIMIT_FSIZE, int(req["fsize"])),
           (resource.RLIMIT_NOFILE, int(req["nofile"])), (resource.RLIMIT_CORE, 0)]
    cpu = int(req["cpu"])

    def limits():
        for which, value in lim:
            resource.setrlimit(which, (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))

    t0 = time.monotonic()
    deadline = t0 + float(req["wall"])
    try:
        proc = subprocess.Popen(req["argv"], cwd="/work/" + req["dir"], env=req["env"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limits,
                                close_fds=True, start_new_session=True)
    except (OSError, subprocess.SubprocessError) as exc:  # as bubblewrap reports what it cannot start: status 1
        why = getattr(exc, "strerror", None) or str(exc)
        return {"rc": 1, "timed_out": False, "over": False, "out": "",
                "err": base64.b64encode(("exec %s: %s\n" % (req["argv"][:1], why)).encode()).decode(),
                "clean": kill_others() and clear_ipc()}
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    open_fds = set(bufs)
    pidfd = os.pidfd_open(proc.pid)
    exited = timed_out = over = False
    total = 0
    while open_fds or not exited:
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        ready, _, _ = select.select(list(open_fds) + ([] if exited else [pidfd]), [], [], deadline - now)
        for fd in ready:
            if fd == pidfd:
                exited = True
                proc.wait()
                kill_others(proc)  # background children die with the job (they may hold its pipes open)
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.discard(fd)
                continue
            total = keep(bufs[fd], chunk, cap, total)
        if total > cap:
            over = True
            break
    clean = kill_others(proc)
    proc.wait()
    os.close(pidfd)
    for fd in list(open_fds):  # what the killed processes wrote last, up to the cap
        while True:
            ready, _, _ = select.select([fd], [], [], 0.5)
            chunk = os.read(fd, 65536) if ready else b""
            if not chunk:
                break
            total = keep(bufs[fd], chunk, cap, total)
            over = over or total > cap
    proc.stdout.close()
    proc.stderr.close()
    rc = proc.returncode
    if rc is not None and rc < 0:
        # killed here (time, output): the harness kills a one-shot sandbox's bubblewrap, whose status is then
        # -SIGKILL; killed by anything else: bubblewrap reports its child's death as 128 + the signal
        rc = -signal.SIGKILL if timed_out or over else 128 - rc
    clean = clear_ipc() and clean and not others()
    return {"rc": rc, "timed_out": timed_out, "over": over,
            "out": base64.b64encode(bytes(bufs[out_fd])).decode(), "err": base64.b64encode(bytes(bufs[err_fd])).decode(),
            "clean": clean}


def main():
    if _LIBC.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.exit("job server: cannot make itself non-dumpable")
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    out = sys.stdout
    out.write(json.dumps({"ready": ME}) + "\n")
    out.flush()
    for line in sys.stdin:
        reply = run(json.loads(line))
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
