import pytest

from harness.cli import main
from tests.conftest import VECTOR_WORLD, toy_state_dict, write_model


def test_run_report_resume(tmp_path, capsys):
    rd = tmp_path / "r"
    assert main(["run", str(VECTOR_WORLD), "qd.generations=5", "runner.progress=false", "--run-dir", str(rd)]) == 0
    out = capsys.readouterr().out
    assert "| cycleqd |" in out and str(rd) in out
    assert main(["report", str(rd)]) == 0
    assert "heatmap:task0" in capsys.readouterr().out
    assert main(["resume", str(rd)]) == 0  # a finished run resumes to the same leaderboard


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["run", str(VECTOR_WORLD), "qd.nope=1", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "qd.nope" in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml does not exist" in capsys.readouterr().err


def test_merge_command(tmp_path, capsys):
    b = write_model(tmp_path / "b", toy_state_dict(0))
    e = write_model(tmp_path / "e", toy_state_dict(1))
    assert main(["merge", "ties", "--base", str(b), "--out", str(tmp_path / "o"), "--param", "density=0.5", str(e)]) == 0
    assert (tmp_path / "o" / "model.safetensors").exists()
    assert main(["merge", "ties", "--base", str(b), "--out", str(tmp_path / "o2"), "--param", "p=1", str(e)]) == 2
    assert "unknown parameter 'p'" in capsys.readouterr().err


def test_overrides_may_follow_options(tmp_path, capsys):
    rd = tmp_path / "r"
    assert main(["run", str(VECTOR_WORLD), "--run-dir", str(rd), "qd.generations=3", "runner.progress=false"]) == 0
    assert "generations: 3" in (rd / "config.yaml").read_text()
    with pytest.raises(SystemExit):
        main(["report", str(rd), "qd.bins=3"])


def test_a_leaderboards_own_options_are_in_its_help(capsys):
    with pytest.raises(SystemExit):
        main(["mini", "--help"])
    out = capsys.readouterr().out
    assert "its own options:" in out and "--tables {1+2,1,2,regime}" in out and "--world VALUE" in out
