"""The harness's private Docker engine, through the SDK: what a crashed run left behind is removed when
the engine starts."""

import io
import shutil
import subprocess
import tarfile

import pytest

from envs import docker_engine
from envs.docker_engine import LABEL, PrivateEngine, owner_labels
from harness.errors import HarnessError


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _empty_image(cl) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("empty")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    cl.api.import_image_from_data(buf.getvalue(), repository="cycleqd-reap-test", tag="1")
    return "cycleqd-reap-test:1"


def test_private_engine_removes_labelled_leftovers_at_start(tmp_path):
    if docker_engine.docker is None:
        pytest.skip("the docker SDK is not installed")
    root, run = tmp_path / "root", tmp_path / "run"
    eng = PrivateEngine(root=root, run=run)
    try:
        eng.start()
    except HarnessError as exc:
        pytest.skip(f"no Docker engine can run here: {exc}")
    try:
        cl = eng.client()
        image = _empty_image(cl)
        # a crashed run's container and work volume (their owner is gone), one of a live process (ours),
        # and one that is not the harness's at all
        crashed = cl.containers.create(image, ["none"], labels={LABEL: "1", f"{LABEL}.pid": str(_dead_pid())})
        crashed_vol = cl.volumes.create(name="cqd-reap-test", labels={LABEL: "1", f"{LABEL}.pid": str(_dead_pid())})
        live = cl.containers.create(image, ["none"], labels=owner_labels())
        foreign = cl.containers.create(image, ["none"])
        eng.stop()  # the engine goes down; the next start (a new harness process) finds the leftovers

        again = PrivateEngine(root=root, run=run)
        again.start()
        eng = again
        ids = {c.id for c in again.client().containers.list(all=True)}
        assert crashed.id not in ids and again.reaped == 1
        assert live.id in ids and foreign.id in ids
        assert crashed_vol.name not in {v.name for v in again.client().volumes.list()}
    finally:
        eng.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_reap_removes_the_judges_commits_of_a_crashed_run():
    """The OS judge commits episode containers (labelled like everything else of ours): a crashed run's
    commits go with its containers; a live process's stay."""
    try:
        cl = docker_engine.client()
    except HarnessError as exc:
        pytest.skip(f"no Docker engine: {exc}")
    image = _empty_image(cl)
    c = cl.containers.create(image, ["none"])
    try:
        dead = c.commit(repository="cycleqd-judge", tag="reap-test-dead",
                        conf={"Labels": {LABEL: "1", f"{LABEL}.pid": str(_dead_pid())}})
        live = c.commit(repository="cycleqd-judge", tag="reap-test-live", conf={"Labels": owner_labels()})
        docker_engine.reap(cl)
        left = {i.id for i in cl.images.list(filters={"label": LABEL})}
        assert dead.id not in left and live.id in left
    finally:
        c.remove(force=True)
        for ref in ("cycleqd-judge:reap-test-dead", "cycleqd-judge:reap-test-live", image):
            try:
                cl.images.remove(ref, force=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


class _Busy:
    """A container whose engine refuses ``fails`` removals first (a removal in progress, a busy root fs)."""

    def __init__(self, fails: int, exc: Exception):
        self.fails, self.exc, self.calls = fails, exc, 0

    def remove(self, force: bool = False) -> None:
        assert force
        self.calls += 1
        if self.calls <= self.fails:
            raise self.exc


def test_discard_retries_what_a_busy_engine_refuses(monkeypatch):
    docker = pytest.importorskip("docker")
    monkeypatch.setattr(docker_engine.time, "sleep", lambda s: None)
    busy = _Busy(3, docker.errors.APIError("409 removal of container is already in progress"))
    assert docker_engine.discard(busy) and busy.calls == 4
    gone = _Busy(1, docker.errors.NotFound("404 no such container"))
    assert docker_engine.discard(gone) and gone.calls == 1
    stuck = _Busy(100, TimeoutError("read timed out"))
    assert not docker_engine.discard(stuck, attempts=3) and stuck.calls == 3


def test_a_container_whose_start_fails_is_removed_not_left():
    """``containers.run`` leaves a created container behind when its start fails; ``start_container``
    removes it and re-raises."""

    class Container:
        removed = False

        def start(self):
            raise RuntimeError("cannot start: no such device")

        def remove(self, force=False):
            Container.removed = force

    class Client:
        class containers:
            @staticmethod
            def create(image, argv, **kw):
                return Container()

    with pytest.raises(RuntimeError, match="cannot start"):
        docker_engine.start_container(Client(), "img", ["true"])
    assert Container.removed
