"""Every shipped config validates offline; the paper-scale one fails only where its files are needed."""

from pathlib import Path

import pytest

from harness.config import load_config
from harness.errors import CheckpointError
from harness.runner.runner import Runner
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path):
    cfg = load_config(path)
    assert len(cfg.tasks) >= 2


def test_paper_config_stops_at_the_missing_weights(tmp_path):
    cfg = load_config(REPO / "configs" / "paper_table1.yaml", [f"model.base={tmp_path / 'no-llama'}"])
    assert cfg.qd.generations == 1200 and cfg.qd.bins == 15 and cfg.qd.mutation_w_max == 0.3
    with pytest.raises(CheckpointError, match="no-llama: model directory does not exist|model.base"):
        Runner.create(cfg, tmp_path / "run")
    assert not Path(tmp_path / "run" / "checkpoint.json").exists()


def test_sam_paper_config_stops_at_the_missing_checkpoint(tmp_path):
    cfg = load_config(REPO / "configs" / "sam_paper.yaml", [f"model.base={tmp_path / 'no-sam'}"])
    assert [t.domain for t in cfg.tasks] == ["sam", "sam"] and cfg.tasks[0].params.model.variant == "vit_h"
    with pytest.raises(CheckpointError, match="no-sam"):
        Runner.create(cfg, tmp_path / "run")
