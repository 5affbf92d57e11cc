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
    assert cfg.qd.generations == 1200 and cfg.qd.bins == 15 and cfg.qd.mutation == "svd_official" and cfg.qd.mutation_w_max is None
    with pytest.raises(CheckpointError, match="no-llama: model directory does not exist|model.base"):
        Runner.create(cfg, tmp_path / "run")
    assert not Path(tmp_path / "run" / "checkpoint.json").exists()


def test_sam_paper_config_stops_at_the_missing_checkpoint(tmp_path):
    cfg = load_config(REPO / "configs" / "sam_paper.yaml", [f"model.base={tmp_path / 'no-sam'}"])
    assert [t.domain for t in cfg.tasks] == ["sam", "sam"] and cfg.tasks[0].params.model.variant == "vit_h"
    with pytest.raises(CheckpointError, match="no-sam"):
        Runner.create(cfg, tmp_path / "run")


@pytest.mark.parametrize("override,message", [
    ("engine.batch_sise=4", r"engine: .*batch_sise"),  # a typo in an engine key
    ("engine.kind=tgi", r"engine.kind: unknown engine 'tgi'"),
    ("tasks.0.domain=nope", r"tasks.\*.domain: unknown domain 'nope'"),
    ("tasks.0.params.max_new_tokens=many", r"tasks.0.params"),  # a wrong type for a declared parameter
    ("tasks.0.params.max_new_tokenz=8", r"tasks.0.params"),  # an unknown parameter
    ("qd.mutation=svd_typo", r"qd.mutation: 'svd_typo' is not one of"),
    ("model.builder.kind=nope", r"model.builder.kind: unknown world builder 'nope'"),
    ("plugins=[surely_not_a_module]", r"plugins.0: cannot import plugin module"),
])
def test_bad_config_is_one_line_at_load_and_writes_nothing(tmp_path, override, message):
    from harness.cli import main
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs" / "mini.yaml", [override])
    assert main(["run", str(REPO / "configs" / "mini.yaml"), override, "--run-dir", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()


def test_disk_budget_below_the_cache_is_refused_by_name():
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.disk_bytes: must be >= model.cache_bytes"):
        load_config(REPO / "configs" / "paper_table1.yaml", ["model.disk_bytes=10"])
    assert load_config(REPO / "configs" / "paper_table1.yaml").model.disk_bytes == 1 << 40
