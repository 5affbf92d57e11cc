"""AgentBench OS: action parsing, observations, the episode sandbox under attack, gold replay."""

import os
import socket
from pathlib import Path

import pytest

from domains.os_interaction import OSDomain, observation, parse_action
from envs.sandbox.base import ExecStatus
from harness.domain import DomainContext, SampleStatus
from harness.episodes import ScriptedAgent
from tests.conftest import SHARED_DATA

DATA = SHARED_DATA / "agentbench_os" / "os_interaction.jsonl"


def test_parse_action_follows_agentbench():
    assert parse_action("Think: x\n\nAct: bash\n\n```bash\nls\n```\n```bash\npwd\n```") == ("bash", "ls\n\npwd")
    assert parse_action("Act: bash\nAct: answer(42)") == ("commit", "42")  # the last Act line decides
    assert parse_action("Act: answer(f(1) + (2))") == ("commit", "f(1) + (2)")
    assert parse_action("Act: answer 42\nAct: finish") == ("commit", None)
    assert parse_action("Act: answer 42") == (None, None)  # no parentheses: not an action
    assert parse_action("I think the answer is 42") == (None, None)


def test_observation_truncation():
    assert observation("") == "The output of the OS is empty."
    assert observation("x" * 800) == "The output of the OS:\n\n" + "x" * 800
    assert observation("x" * 801) == "The output of the OS:\n\n" + "x" * 780 + "\n[truncated because the output is too long]"


def rootfs_or_skip():
    from envs.rootfs import ensure_rootfs
    from harness.errors import HarnessError

    if os.geteuid() != 0:
        pytest.skip("the OS sandbox needs root")
    try:
        return ensure_rootfs()
    except HarnessError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def rootfs():
    return rootfs_or_skip()


@pytest.fixture(params=["local", "docker"])
def shell(rootfs, request):
    if request.param == "docker":
        from envs.sandbox.docker import DockerShell
        from harness.errors import HarnessError

        try:
            sh = DockerShell(rootfs)
        except HarnessError as exc:
            pytest.skip(f"docker unavailable: {exc}")
    else:
        from envs.sandbox.rootfs_shell import RootfsShell

        sh = RootfsShell(rootfs)
    with sh:
        yield sh


def test_shell_state_persists_and_writes_stay_in_the_episode(shell, rootfs):
    assert shell.run("cd /usr && export A=1 && echo x > /usr/episode_file").status == ExecStatus.OK
    assert shell.exec(["cat", "/usr/episode_file"])[1] == "x\n"  # independent processes see the same system
    r = shell.run("pwd; echo $A; cat /usr/episode_file; id -u")
    assert r.output == "/usr\n1\nx\n0\n"
    assert not (Path(rootfs) / "usr" / "episode_file").exists()
    assert shell.run("useradd -m eve && su eve -c 'id -un'").output == "eve\n"


def test_the_harness_environment_stays_outside(rootfs, monkeypatch):
    """vLLM's CPU build sets LD_PRELOAD to a library inside its venv; a harness may hold tokens. Neither may
    reach the episode, and the preload must not break the host-side setup (it once made every episode an
    ENV_ERROR)."""
    from envs.sandbox.rootfs_shell import RootfsShell

    monkeypatch.setenv("LD_PRELOAD", "/nonexistent/libgomp.so.1")
    monkeypatch.setenv("CYCLEQD_TEST_SECRET", "hunter2")
    with RootfsShell(rootfs) as sh:
        r = sh.run("env; echo end")
        rc, out, status = sh.exec(["sh", "-c", "env; echo end"])  # check scripts run this way
    assert r.status == ExecStatus.OK and r.output.endswith("end\n")
    assert status == ExecStatus.OK and rc == 0 and out.endswith("end\n")
    for text in (r.output, out):
        assert "hunter2" not in text and "LD_PRELOAD" not in text and "ld.so" not in text


HOSTILE = {
    "fork bomb": ":(){ :|:& };: ; sleep 1; echo done",
    "memory bomb": "python3 -c 'x = bytearray(4 << 30)'; echo rc=$?",
    "sleep forever": "sleep 100000",
    "100 MB of output": "head -c 100000000 /dev/zero | tr '\\0' x",
    "mount": "mount -t tmpfs t /mnt && echo MOUNTED",
    "mknod a disk": "mknod /tmp/sda b 8 0 && echo MKNOD",
    "load a kernel module": "python3 -c \"import ctypes; print('MODULE' if ctypes.CDLL(None).syscall(175, 0, 0, 0) == 0 else 'denied')\"",
    "chroot escape": "mkdir -p /x && chroot /x /bin/true && echo CHROOTED",
    "write kernel settings": "echo 1 > /proc/sys/kernel/sysrq && echo SYSCTL; echo b > /proc/sysrq-trigger && echo SYSRQ",
    "reboot": "reboot -f; echo rc=$?",
    "change the clock": "date -s '2001-01-01' && echo CLOCK",
    "host processes": "ps -e | wc -l",
    "read the harness": "ls /work/main /root/.cache 2>&1; cat /proc/1/environ | tr '\\0' ' '",
    "zombies": "for i in $(seq 50); do (sleep 0.1 &) ; done; echo spawned",
}


def test_an_episodes_dev_is_its_own(rootfs):
    """The episode's /dev is a directory made on the harness's side and bound in: what the agent does to it
    (replace a node by a link to a secret, plant a disk node, fill it) stays in that episode and never
    reaches the host's /dev or the next episode's."""
    import stat

    from envs.sandbox.rootfs_shell import RootfsShell

    with RootfsShell(rootfs) as sh:
        r = sh.run("rm -f /dev/null && ln -s /etc/shadow /dev/null && echo REPLACED; mknod /dev/sda b 8 0 && "
                   "echo MKNOD; head -c 3000000 /dev/zero > /dev/big; ls /dev | wc -l; echo end", timeout=10)
        assert "REPLACED" in r.output and "MKNOD" not in r.output and r.output.endswith("end\n")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)  # the host's node is untouched
    with RootfsShell(rootfs) as sh:
        r = sh.run("test -c /dev/null && echo x > /dev/null && echo NULLOK; ls /dev | tr '\\n' ' '")
        assert "NULLOK" in r.output and "big" not in r.output and "sda" not in r.output
        assert sorted(r.output.split("NULLOK")[1].split()) == sorted(
            ["fd", "full", "null", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom", "zero"])


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_commands_are_contained(shell, name):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    r = shell.run(HOSTILE[name], timeout=5)
    out = r.output
    for marker in ("MOUNTED", "MKNOD", "MODULE", "CHROOTED", "SYSCTL", "SYSRQ", "CLOCK", "README"):
        assert marker not in out, (name, out[-300:])
    assert len(out) <= shell.limits.output_bytes
    if name == "host processes":
        assert int(out.strip()) < 20
    if name == "sleep forever":
        assert r.status == ExecStatus.TIMEOUT
    # the episode goes on (or, for a shell that killed itself, ends cleanly) and the host is fine
    after = shell.run("echo alive", timeout=10)
    assert "alive\n" in after.output or not shell.alive  # a live bomb may still print around it
    port = srv.getsockname()[1]
    net = shell.run(f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1); print('CONNECTED')\" 2>&1 | tail -1", timeout=10)
    assert "CONNECTED" not in net.output
    srv.settimeout(0.1)
    with pytest.raises(OSError):
        srv.accept()
    srv.close()


def test_kill_everything_ends_the_episode_not_the_harness(shell):
    shell.run("kill -9 -1", timeout=5)
    r = shell.run("echo alive", timeout=5)
    assert r.status in (ExecStatus.OK, ExecStatus.ENV_ERROR)


@pytest.fixture(scope="module")
def osdomain(rootfs):
    if not DATA.exists():
        pytest.skip(f"{DATA} not found")
    d = OSDomain(task="os", ctx=DomainContext(None, 0, SHARED_DATA), rootfs=str(rootfs))
    d.setup()
    return d


def test_first_turns_are_the_one_shot_conversation(osdomain):
    seen = []
    osdomain.run(ScriptedAgent(lambda s, t, m: seen.append(m) or "Act: finish"), [0])
    msgs = seen[0]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert msgs[0]["content"].endswith('Now, my problem is:\n\ntell me how many files are in the directory "/etc"?')
    assert msgs[-1]["content"] == ("Now, I will start a new problem in a new OS. My problem is:\n\n"
                                   + osdomain.samples()[0]["description"])


# Gold failures, each explained in the issue note: 26 (an init script opens fd 123321, above this
# machine's descriptor limit), 55 (its init script waits for apt's confirmation; its fix needs the network),
# 56 and 131 (process counts differ between the shell and the independent check process), 57 (it counts
# processes with "bash" in their command line: in the interactive shell a pipeline's forks that have not
# yet become grep are counted, so the gold answer is 1 or 2 by timing; seen both ways on main and here), 64 and 85
# (`find` over / counts /proc, which changes between the answer and the check), 74 (its answer adds the
# host's used-memory percentage, which moves between the answer and the check when anything else runs on the
# machine: seen failing once while a model trained beside the tests), 153 (the check itself cannot parse
# du's "4.0K").
KNOWN = {"os/26", "os/55", "os/56", "os/57", "os/64", "os/74", "os/85", "os/131", "os/153"}


def test_gold_replay(osdomain):
    r = osdomain.run(osdomain.scripted_agent("gold"))
    bad = {s.sample_id for s in r.samples if s.score < 1}
    assert bad <= KNOWN, bad - KNOWN
    assert {s.sample_id for s in r.samples if s.status.is_harness_failure} <= {"os/26", "os/55"}
    assert len(r.samples) - len(bad) >= 170 - len(KNOWN)  # every task but the known host-dependent ones


def test_gold_replay_in_docker(rootfs):
    d = OSDomain(task="os", ctx=DomainContext(None, 0, SHARED_DATA), backend="docker", rootfs=str(rootfs))
    d.setup()
    from harness.errors import HarnessError

    try:
        d.make_env().close()
    except HarnessError as exc:
        pytest.skip(f"docker unavailable: {exc}")
    idx = list(range(0, 170, 6))
    r = d.run(d.scripted_agent("gold"), idx)
    bad = {s.sample_id for s in r.samples if s.score < 1}
    assert bad <= KNOWN, bad
    assert len(r.samples) - len(bad) >= len(idx) - 3


@pytest.mark.parametrize("kind,status", [("wrong", SampleStatus.WRONG), ("garbage", SampleStatus.INVALID_ACTION),
                                         ("never_act", SampleStatus.TURN_LIMIT)])
def test_wrong_agents(osdomain, kind, status):
    r = osdomain.run(osdomain.scripted_agent(kind), range(0, 170, 9))
    assert sum(s.score for s in r.samples) <= 1  # answering 0 can be right once in a while
    assert r.status_counts().get(status.value, 0) >= len(r.samples) - 2


def test_environments_are_made_while_the_agent_writes_its_first_reply():
    """The environment of an episode depends on nothing the agent says: it is made in a thread while the
    agent writes its first reply (the make_env below only finishes once the agent has been asked, so made
    one after the other it would time out). One that cannot be made still ends as the harness's error."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from domains.os_interaction import OSEpisode
    from harness.domain import SampleStatus
    from harness.episodes import Agent, run_episodes
    from harness.errors import HarnessError

    asked = threading.Event()

    class Env:
        def close(self):
            pass

    def make_env():
        if not asked.wait(10):
            raise HarnessError("made before the agent was asked")
        return Env()

    def broken_env():
        raise HarnessError("no shell today")

    class Answers(Agent):
        def __init__(self):
            self.calls = 0

        def respond(self, requests):
            self.calls += 1
            asked.set()
            return ["Think: easy.\n\nAct: answer(4)"] * len(requests)

    sample = {"description": "2 + 2?", "match": {"answer": "4"}}
    agent = Answers()
    with ThreadPoolExecutor(2) as pool:
        eps = [OSEpisode("os/0", sample, [], make_env, 3, 5.0, pool=pool),
               OSEpisode("os/1", sample, [], broken_env, 3, 5.0, pool=pool)]
        run_episodes(eps, agent, batch_size=2)
    assert agent.calls == 1
    assert eps[0].result.status == SampleStatus.SOLVED, eps[0].result
    assert eps[1].result.status == SampleStatus.ENV_ERROR and "no shell today" in eps[1].result.detail["error"]
