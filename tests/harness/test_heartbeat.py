"""The heartbeat logs while a model is being scored, at least every interval, and stays quiet when idle."""

import logging
import time

import pytest

from harness.heartbeat import Heartbeat
from harness.runner.runner import run_from_config
from tests.conftest import VECTOR_WORLD


def test_beats_while_busy_and_not_while_idle(caplog):
    caplog.set_level(logging.INFO, logger="cycleqd")
    hb = Heartbeat(0.05)
    try:
        hb.begin("m-1 on opt")
        hb.at("code", 3, 20)
        time.sleep(0.3)
        beats = [r.getMessage() for r in caplog.records if "still evaluating" in r.getMessage()]
        assert len(beats) >= 2
        assert beats[-1].startswith("still evaluating m-1 on opt: code 3/20 instances")
        hb.end()
        time.sleep(0.1)
        n = len(caplog.records)
        time.sleep(0.3)
        assert len(caplog.records) == n  # idle: silent
        assert hb.line() is None
    finally:
        hb.close()


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval must be > 0"):
        Heartbeat(0)


def test_a_run_reports_per_task_progress(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="cycleqd")
    run_from_config(VECTOR_WORLD, ["qd.generations=2", "runner.progress=false", "runner.race_chunk=50"],
                    run_dir=tmp_path / "r")
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith(": task1 50/100") for line in lines)
    assert any(line.endswith(": task2 100/100") for line in lines)
