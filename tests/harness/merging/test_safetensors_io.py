import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.errors import CheckpointError
from harness.merging.safetensors_io import CheckpointReader, SafetensorsReader, SafetensorsWriter, save_state_dict


def sample():
    return {"w": torch.randn(3, 4), "h": torch.randn(5).to(torch.bfloat16), "i": torch.arange(7),
            "empty": torch.zeros(0, 3)}


def test_our_files_load_with_the_library_and_back(tmp_path):
    sd = sample()
    save_state_dict(tmp_path / "ours.safetensors", sd)
    theirs = load_file(tmp_path / "ours.safetensors")
    assert all(torch.equal(theirs[k], sd[k]) for k in sd)
    save_file(sd, tmp_path / "lib.safetensors")
    with SafetensorsReader(tmp_path / "lib.safetensors") as r:
        assert all(torch.equal(r.read(k), sd[k]) and r.read(k).dtype == sd[k].dtype for k in sd)


def test_writer_enforces_declared_order_and_shapes(tmp_path):
    w = SafetensorsWriter(tmp_path / "x.safetensors", {"a": (torch.float32, (2,)), "b": (torch.float32, (1,))})
    with pytest.raises(ValueError, match="expected 'a'"):
        w.write("b", torch.zeros(1))
    with pytest.raises(ValueError, match="declared"):
        w.write("a", torch.zeros(3))
    w.abort()
    assert not (tmp_path / "x.safetensors").exists()


def test_killed_writer_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with SafetensorsWriter(tmp_path / "y.safetensors", {"a": (torch.float32, (2,))}):
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a safetensors file"):
        SafetensorsReader(p)
    p.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(CheckpointError, match="not JSON"):
        SafetensorsReader(p)
    good = tmp_path / "t.safetensors"
    save_state_dict(good, {"w": torch.randn(100)})
    data = good.read_bytes()
    good.write_bytes(data[:-40])
    with pytest.raises(CheckpointError, match="'w'.*truncated"):
        SafetensorsReader(good)


def test_sharded_directory(tmp_path):
    save_state_dict(tmp_path / "model-00001-of-00002.safetensors", {"a": torch.ones(2)})
    save_state_dict(tmp_path / "model-00002-of-00002.safetensors", {"b": torch.zeros(3)})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with CheckpointReader(tmp_path) as r:
        assert r.keys() == ["a", "b"] and torch.equal(r.read("b"), torch.zeros(3))


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        CheckpointReader(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        CheckpointReader(tmp_path / "empty")
