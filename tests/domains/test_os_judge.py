"""The OS judge under attack: an agent that is root in its episode cannot make the check pass without
doing the task, rewrite the evidence the expected answer is computed from, lift its limits, change the
host's kernel settings, or leave anything for the next episode. Every attack runs against each episode
shell (local rootfs, Docker); each sample also has an honest solution that must still pass (a judge that
always says WRONG passes no test here)."""

import os
import time
from pathlib import Path

import pytest

from domains.os_interaction import OSEpisode, interpreter
from envs.sandbox.base import ExecStatus
from harness.domain import SampleStatus
from tests.domains.test_os import rootfs_or_skip

INT_EQ = ["python", "from sys import argv\n\n\nif int(argv[1]) == int(argv[2]):\n    exit(0)\nexit(1)\n"]
# a question: the expected answer is the example script's output on the state the init script left
QUESTION = {"description": "How many files are in /data?",
            "init_script": [["bash", "mkdir /data && touch /data/a /data/b /data/c"]],
            "check": [None, INT_EQ], "example_script": ["bash", "ls /data | wc -l"]}
# tasks that change the system: checked on the agent's final files, by a bash, a python and an awk check
CHMOD_BASH = {"description": "Make /secret readable by root only.",
              "init_script": [["bash", "echo s > /secret && chmod 644 /secret"]],
              "check": [["bash", "[ \"$(stat -c %a /secret)\" = 600 ]"]]}
CHMOD_PYTHON = {**CHMOD_BASH, "check": [["python", "import os, sys\nsys.exit(0 if os.stat('/secret').st_mode & 0o777 == 0o600 else 1)"]]}
CHMOD_AWK = {**CHMOD_BASH, "check": [["bash", "ls -l /secret | awk '{ if ($1 == \"-rw-------\") exit 0; exit 1 }'"]]}

PLANT_PYTHON = "printf '#!/bin/sh\\nexit 0\\n' > /usr/local/bin/python3 && chmod +x /usr/local/bin/python3"
PLANT_BASH = "cp /bin/true /usr/local/bin/bash"
# (class, sample, commands of the agent's turn 0 or None, the answer it commits)
ATTACKS = {
    # issue 13, item 1: a planted python3 passes every python check in AgentBench
    "fake success: python3 planted in /usr/local/bin": ("fake success", QUESTION, PLANT_PYTHON, "999999"),
    "fake success: bash planted in /usr/local/bin": ("fake success", CHMOD_BASH, PLANT_BASH, None),
    "fake success: the real python3.11 replaced": ("fake success", CHMOD_PYTHON, "cp /bin/true /usr/bin/python3.11", None),
    "fake success: a .pth in site-packages exits 0": (
        "fake success", QUESTION,
        "echo 'import os; os._exit(0)' > /usr/local/lib/python3.11/dist-packages/zz.pth; "
        "echo 'import os; os._exit(0)' > /usr/lib/python3/dist-packages/zz.pth", "999999"),
    "fake success: sitecustomize exits 0": (
        "fake success", CHMOD_PYTHON, "echo 'import os; os._exit(0)' > /etc/python3.11/sitecustomize.py", None),
    "fake success: a user site-packages .pth": (
        "fake success", QUESTION,
        "d=$(python3 -c 'import site; print(site.getusersitepackages())'); mkdir -p $d; "
        "echo 'import os; os._exit(0)' > $d/zz.pth", "999999"),
    "fake success: awk's alternative points at true": ("fake success", CHMOD_AWK, "ln -sf /bin/true /etc/alternatives/awk", None),
    "fake success: a command the check calls, replaced": (
        "fake success", CHMOD_BASH, "printf '#!/bin/sh\\necho 600\\n' > /usr/bin/stat", None),
    # the evidence: add files, then answer what the example script now says
    "rewrite the evidence: files added, then the new count answered": (
        "rewrite the evidence", QUESTION, "touch /data/d /data/e", "5"),
    "rewrite the evidence: a daemon plants python3 during the check": (
        "rewrite the evidence", QUESTION,
        "nohup sh -c 'sleep 1.5; cp /bin/true /usr/local/bin/python3' >/dev/null 2>&1 & echo started", "999999"),
}
PLANTED_LATER = "/usr/local/bin/python3"  # what the emulated AgentBench check waits for, for that daemon
HONEST = {"question": (QUESTION, None, "3"), "chmod (bash check)": (CHMOD_BASH, "chmod 600 /secret", None),
          "chmod (python check)": (CHMOD_PYTHON, "chmod 600 /secret", None),
          "chmod (awk check)": (CHMOD_AWK, "chmod 600 /secret", None)}


@pytest.fixture(scope="module")
def rootfs():
    return rootfs_or_skip()


@pytest.fixture(params=["local", "docker"])
def make_env(rootfs, request):
    from harness.errors import HarnessError

    if request.param == "docker":
        from envs.sandbox.docker import DockerShell

        try:
            DockerShell(rootfs).close()
        except HarnessError as exc:
            pytest.skip(f"docker unavailable: {exc}")
        return lambda: DockerShell(rootfs)
    from envs.sandbox.rootfs_shell import RootfsShell

    return lambda: RootfsShell(rootfs)


def agentbench_check(env, sample, answer) -> bool:
    """AgentBench's judge: every check step (a null one: the example script, then) run inside the agent's
    system, on its final state, each fed the answer and the outputs so far."""
    params = ["" if answer is None else answer]
    for entry in sample["check"]:
        lang, code = entry or sample["example_script"]
        rc, out, _ = env.exec(interpreter(lang, code, params), timeout=30)
        if rc != 0:
            return False
        params.append(out)
    return True


def play(make_env, sample, command, answer, agentbench: bool = False, wait_for: str | None = None):
    """One episode: the agent's commands (if any), then its answer (or ``finish``). Returns the judged
    result and, with ``agentbench``, what AgentBench's judge says of the same final state (once the path
    ``wait_for`` exists: what a daemon of the agent plants later)."""
    ep = OSEpisode("os/t", sample, [], make_env, round_limit=5, action_timeout=10)
    try:
        assert not ep.done, ep.result
        if command:
            ep.step(f"Think: x\n\nAct: bash\n\n```bash\n{command}\n```")
            assert not ep.done, ep.result
        ab = None
        if agentbench:
            for _ in range(100 if wait_for else 0):
                if ep.env.exec(["test", "-e", wait_for])[0] == 0:
                    break
                time.sleep(0.1)
            ab = agentbench_check(ep.env, sample, answer)
        ep.step(f"Act: answer({answer})" if answer is not None else "Act: finish")
        assert ep.done
        return ep.result, ab
    finally:
        ep.close()


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_solutions_pass(make_env, name):
    sample, command, answer = HONEST[name]
    r, ab = play(make_env, sample, command, answer, agentbench=True)
    assert r.status == SampleStatus.SOLVED and ab, (r.detail, ab)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_on_the_judge_fail(make_env, name):
    _, sample, command, answer = ATTACKS[name]
    r, ab = play(make_env, sample, command, answer, agentbench=True, wait_for=PLANTED_LATER if "daemon" in name else None)
    assert ab, f"{name}: not an attack: AgentBench's judge refuses it too"
    assert r.status == SampleStatus.WRONG, (name, r.status, r.detail)


def test_the_attacks_do_work_inside_the_episode(rootfs):
    """The control: inside the agent's system (where AgentBench runs its checks), the planted interpreter
    does make a failing check exit 0; only the judge's system refuses it."""
    from envs.sandbox.rootfs_shell import RootfsShell

    with RootfsShell(rootfs) as sh:
        sh.run(PLANT_PYTHON)
        assert sh.exec(["python3", "-c", "raise SystemExit(1)"])[0] == 0
        sh.seal()
        assert sh.exec(["python3", "-c", "raise SystemExit(1)"])[0] == 1


@pytest.fixture(params=["local", "docker"])
def shell(rootfs, request):
    from harness.errors import HarnessError

    if request.param == "docker":
        from envs.sandbox.docker import DockerShell

        try:
            sh = DockerShell(rootfs)
        except HarnessError as exc:
            pytest.skip(f"docker unavailable: {exc}")
    else:
        from envs.sandbox.rootfs_shell import RootfsShell

        sh = RootfsShell(rootfs)
    with sh:
        yield sh


def test_seal_kills_every_process_and_judges_with_the_pristine_system(shell):
    shell.run("nohup sleep 1000 >/dev/null 2>&1 & (setsid sleep 1001 &); echo x > /root/final; " + PLANT_PYTHON)
    shell.seal()
    assert not shell.alive and shell.run("echo hi").status == ExecStatus.ENV_ERROR
    rc, out, st = shell.exec(["bash", "-c", "cat /root/final; command -v python3 bash; ps -eo args | grep -c '^sleep 100' ; "
                                            # its error to /dev/null: Docker's exec interleaves stderr and
                                            # stdout in no fixed order (a flake under load put it first)
                                            "{ echo 1 > /proc/sys/vm/swappiness; } 2>/dev/null && echo SYSCTL"])
    lines = out.splitlines()
    assert st == ExecStatus.OK and lines[0] == "x", out  # the agent's files are the data
    assert lines[1:3] == ["/.judge/bin/python3", "/.judge/bin/bash"], out
    assert lines[3] == "0", out  # no process of the agent is left
    assert "SYSCTL" not in out


def test_the_example_script_sees_processes_but_leaves_no_trace(shell):
    shell.exec(["bash", "-c", "echo init > /root/f; nohup sleep 1000 >/dev/null 2>&1 &"])
    rc, out, st = shell.exec_isolated(["bash", "-c", "cat /root/f; echo side > /root/g; ps -eo args | grep -c '^sleep 1000'"])
    assert (rc, st) == (0, ExecStatus.OK) and out.split() == ["init", "1"], out
    assert shell.run("ls /root").output.split() == ["f"]  # its write stayed in its throw-away view


HOST_STATE = {
    # issue 13, item 7: the value written back is the host's own, so nothing changes even where it succeeds
    "write a host kernel setting": f"echo {Path('/proc/sys/vm/swappiness').read_text().strip()} > "
                                   "/proc/sys/vm/swappiness && echo SYSCTL",
    "lift limits: a user namespace to mount the cgroups": "unshare -U -r -m -C sh -c 'mount -t cgroup -o pids none /mnt "
                                                          "&& echo CGMOUNT'; echo done",
    "lift limits: mount cgroupfs": "mount -t cgroup -o pids none /mnt && echo CGMOUNT; mount -t cgroup2 none /mnt && echo CGMOUNT",
    # the limit files that exist (Docker's /sys/fs/cgroup on a v1 host is a tmpfs: a new file there is no limit)
    "lift limits: write the cgroup limits": "for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/memory.max "
                                            "/sys/fs/cgroup/memory/memory.limit_in_bytes; do [ -f $f ] && "
                                            "echo 9999999999 > $f 2>/dev/null && echo CGWRITE; done; echo done",
    "change host state: remount /proc/sys read-write": "mount -o remount,rw /proc/sys && echo REMOUNT; "
                                                       "umount /proc/sys && echo REMOUNT; echo done",
}


@pytest.mark.parametrize("name", sorted(HOST_STATE))
def test_host_state_is_out_of_reach(shell, name):
    r = shell.run(HOST_STATE[name], timeout=10)
    for marker in ("SYSCTL", "CGMOUNT", "CGWRITE", "REMOUNT"):
        assert marker not in r.output, (name, r.output[-300:])


def test_nothing_reaches_the_next_episode(rootfs, make_env):
    """Poison the next sample: what one episode (and its judge) changes, the next one never sees."""
    first = make_env()
    with first:
        first.run(PLANT_PYTHON + "; echo poisoned > /etc/motd; echo 'alias ls=false' >> /etc/bash.bashrc")
        first.seal()
        first.exec(["bash", "-c", "echo judge > /etc/judge_was_here"])
    with make_env() as second:
        r = second.run("ls /usr/local/bin; cat /etc/motd; ls /etc/judge_was_here; grep -c 'alias ls' /etc/bash.bashrc")
        assert "python3" not in r.output and "poisoned" not in r.output and "judge" not in r.output.split()
    assert not (Path(rootfs) / "usr/local/bin/python3").exists()


def test_a_local_episode_leaves_no_mount_or_cgroup(rootfs):
    from envs.sandbox.rootfs_shell import RootfsShell

    sh = RootfsShell(rootfs)
    d, cgs = str(sh.dir), [str(p) for p in sh.cg.dirs]
    sh.exec_isolated(["true"])
    sh.seal()
    sh.close()
    assert d not in Path("/proc/self/mountinfo").read_text()
    assert not any(os.path.exists(p) for p in cgs)


def test_commands_the_agent_removed_stay_removed_and_its_own_are_found(shell):
    """The pristine commands come first on the judge's PATH, but only those the agent's system still has
    (os/55 asks to reinstall a removed sudo); a command the task asked for is found after them."""
    shell.run("rm /usr/bin/sudo /usr/sbin/useradd; printf '#!/bin/sh\\necho mine\\n' > /usr/local/bin/calc; "
              "chmod +x /usr/local/bin/calc")
    shell.seal()
    assert shell.exec(["bash", "-c", "command -v sudo"])[0] == 1
    assert shell.exec(["bash", "-c", "command -v useradd"])[0] == 1
    assert shell.exec(["bash", "-c", "command -v ls; calc"])[1] == "/.judge/bin/ls\nmine\n"


@pytest.mark.parametrize("sample,command,answer", [(CHMOD_BASH, "chmod 600 /secret", None), (QUESTION, None, "3")])
def test_a_full_disk_does_not_stop_the_judge(rootfs, sample, command, answer):
    """Crash the judge: the agent fills its filesystem (local: the episode's tmpfs; Docker has no such
    bound and would fill the host's disk) and then answers right: still judged, not a harness error."""
    from dataclasses import replace

    from envs.sandbox.base import EPISODE_LIMITS
    from envs.sandbox.rootfs_shell import RootfsShell

    fill = "dd if=/dev/zero of=/fill bs=1M >/dev/null 2>&1; dd if=/dev/zero of=/fill2 bs=4k >/dev/null 2>&1; df -k / | tail -1"
    r, _ = play(lambda: RootfsShell(rootfs, limits=replace(EPISODE_LIMITS, workdir_bytes=32 << 20)), sample,
                f"{command or 'true'}; {fill}", answer)
    assert r.status == SampleStatus.SOLVED, r.detail
