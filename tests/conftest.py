"""Shared fixtures: tiny random HF-style checkpoints built on the fly (no downloads)."""

from __future__ import annotations

import json
import os as _os
import shutil as _shutil
from pathlib import Path

import pytest
import torch

from harness.merging.safetensors_io import save_state_dict


def write_model(d: Path, sd: dict[str, torch.Tensor]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"model_type": "toy"}))
    save_state_dict(d / "model.safetensors", sd)
    return d


def toy_state_dict(seed: int, shapes=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {"a.weight": (6, 5), "b.weight": (4, 4), "norm.weight": (5,)}
    return {k: torch.randn(s, generator=g).to(dtype) for k, s in shapes.items()}


@pytest.fixture
def toy_models(tmp_path):
    """base + two experts (float32) as HF directories."""
    base = toy_state_dict(0)
    e1 = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}
    e2 = {k: v + 0.1 * torch.randn_like(v) for k, v in base.items()}
    return {
        "base": write_model(tmp_path / "base", base),
        "e1": write_model(tmp_path / "e1", e1),
        "e2": write_model(tmp_path / "e2", e2),
        "sd": {"base": base, "e1": e1, "e2": e2},
    }


REPO = Path(__file__).resolve().parents[1]
VECTOR_WORLD = REPO / "configs" / "vector_world.yaml"

SHARED_DATA = Path(_os.environ.get("CYCLEQD_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def mariadb_backend():
    """A private MariaDB server for the session; skipped with the reason where it cannot start."""
    if not _shutil.which("mariadbd"):
        pytest.skip("mariadbd not installed (envs/install-system-deps.sh installs it)")
    from envs.sql.mariadb import MariaDBBackend

    backend = MariaDBBackend()
    yield backend
    backend.close()


def build_tiny_llm(d: Path, seed: int = 0, *, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                   init_std: float = 0.02) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer trained here, saved as an HF directory."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["SELECT count(*) FROM table;", "def add(a, b):\n    return a + b", "Action: Operation", "ls -la /tmp"] * 50
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                      initializer_range=init_std)
    model = LlamaForCausalLM(cfg)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm") / "model")


@pytest.fixture(scope="session")
def mariadb_docker_backend():
    """MariaDB in a Docker container (image built from a debootstrap rootfs); skipped where impossible."""
    from envs.sql.mariadb import MariaDBBackend
    from harness.errors import HarnessError

    try:
        backend = MariaDBBackend(server="docker")
    except HarnessError as exc:
        pytest.skip(f"mariadb in docker unavailable: {exc}")
    yield backend
    backend.close()
