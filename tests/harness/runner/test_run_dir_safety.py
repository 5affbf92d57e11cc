"""The run directory under stress: YAML errors, a full disk, leftovers of killed writers, two runners."""

import errno
import os

import pytest

from harness.cli import main
from harness.config import load_config
from harness.errors import ConfigError, HarnessError
from harness.runner import checkpoint as ck
from harness.runner.runner import Runner
from tests.conftest import VECTOR_WORLD

QUICK = ["qd.generations=2", "runner.progress=false", "runner.final_rows=final"]


def test_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3:1: not valid YAML"):
        load_config(bad)
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]


def test_disk_full_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.json"
    ck.atomic_write_json(target, {"v": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(HarnessError, match="no space left on the device; the previous version of the file is intact"):
        ck.atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert ck.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temporary left behind


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = tmp_path / ".checkpoint.json.tmp999999999"
    mine = tmp_path / f".checkpoint.json.tmp{os.getpid()}"
    dead.write_text("x")
    mine.write_text("y")
    assert ck.remove_stale_temporaries(tmp_path) == [dead]
    assert not dead.exists() and mine.exists()


def test_a_second_runner_is_refused_while_one_works(tmp_path):
    cfg = load_config(VECTOR_WORLD, QUICK)
    runner = Runner.create(cfg, tmp_path / "r")
    try:
        with pytest.raises(HarnessError, match="in use by another cycleqd process"):
            Runner.resume(tmp_path / "r")
        assert main(["resume", str(tmp_path / "r")]) == 2
    finally:
        runner.run()  # releases the directory when it ends
    (tmp_path / "r" / ".checkpoint.json.tmp999999999").write_text("left by a killed run")
    Runner.resume(tmp_path / "r").close()  # free again; the leftover is cleared on resume
    assert not (tmp_path / "r" / ".checkpoint.json.tmp999999999").exists()
