"""HF transformers engine: batched greedy chat generation, weights swapped in place.

Left padding, the tokenizer's chat template (or one given by path, e.g. the MBPP instruction/response
template for base models), an optional assistant prefill, stop strings applied exactly (the text is cut
at the first occurrence, whatever the tokenisation). ``load_state_dict`` copies tensors into the existing
parameters: building the model happens once per worker, not once per child.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import torch

from harness.engines.base import ChatEngine
from harness.episodes import CONTEXT_LIMIT
from harness.errors import CheckpointError

# one loaded model per (directory, device, dtype) per process: the weights are swapped in place before every
# evaluation, so the coding task's engine and the agent tasks' engine can hold the same one (at 8B, two
# copies would be 32 GB)
_MODELS: dict[tuple, torch.nn.Module] = {}


class HFEngine(ChatEngine):
    def __init__(self, model: str, *, device: str = "cpu", dtype: str | None = None, chat_template: str | None = None,
                 batch_size: int = 16, max_length: int | None = None):
        from transformers import AutoModelForCausalLM, AutoTokenizer  # optional: the 'llm' extra
        from transformers.utils import logging as hf_logging  # optional: the 'llm' extra

        hf_logging.disable_progress_bar()  # one bar per engine build (per worker) is noise in run logs

        path = Path(model)
        if not path.is_dir():
            raise CheckpointError(f"engine.model: directory {path} does not exist")
        self.tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        torch_dtype = getattr(torch, dtype) if dtype else None
        key = (str(path.resolve()), device, dtype)
        if key not in _MODELS:  # engines that differ only in chat template / batching share one model
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch_dtype).to(device)
            _MODELS[key] = model.eval()
        self.model = _MODELS[key]
        self.device, self.batch_size = device, batch_size
        # the context: prompt + reply must fit (default: the model's position limit)
        self.max_length = max_length or getattr(self.model.config, "max_position_embeddings", None)
        self.chat_template = resolve_chat_template(self.tok, path, chat_template)
        self._params = dict(self.model.named_parameters())
        self._buffers = dict(self.model.named_buffers())
        self.seconds = {"load": 0.0, "generate": 0.0}

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy weights into the live model (same objects, same memory); every parameter must be given,
        except weights tied to one that is (lm_head to the embeddings)."""
        t0 = time.perf_counter()
        seen_ptrs = set()
        for name, p in self._params.items():
            t = state_dict.get(name)
            if t is None:
                if p.data_ptr() in seen_ptrs:
                    continue  # tied to a parameter already loaded
                raise CheckpointError(f"engine: state dict lacks parameter {name!r}")
            if tuple(t.shape) != tuple(p.shape):
                raise CheckpointError(f"engine: {name!r} has shape {list(t.shape)}, the model has {list(p.shape)}")
            p.copy_(t.to(p.dtype))
            seen_ptrs.add(p.data_ptr())
        extra = [k for k in state_dict if k not in self._params and k not in self._buffers]
        if extra:
            raise CheckpointError(f"engine: state dict has unexpected tensor {extra[0]!r}")
        self.seconds["load"] += time.perf_counter() - t0

    def prompts(self, conversations: Sequence[list[dict]], prefill: str = "") -> list[str]:
        return render_prompts(self.tok, self.chat_template, conversations, prefill)

    @torch.no_grad()
    def generate(self, conversations, *, prefill: str = "", stop: Sequence[str] | None = None,
                 max_new_tokens: int = 512) -> list[str]:
        t0 = time.perf_counter()
        prompts = self.prompts(conversations, prefill)
        out: list[str] = [""] * len(prompts)
        ids = self.tok(prompts, add_special_tokens=False)["input_ids"]  # tokenized once, padded per batch
        lengths = [len(x) for x in ids]
        fits = []
        for i, n in enumerate(lengths):
            if self.max_length and n + max_new_tokens > self.max_length:
                out[i] = CONTEXT_LIMIT
            else:
                fits.append(i)
        order = sorted(fits, key=lambda i: lengths[i])  # similar lengths batch together
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt").to(self.device)
            gen = self.model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tok.pad_token_id,
                                      stop_strings=list(stop) if stop else None,
                                      tokenizer=self.tok if stop else None)
            new = gen[:, enc["input_ids"].shape[1] :]
            for j, i in enumerate(idx):
                text = self.tok.decode(new[j], skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop)
        self.seconds["generate"] += time.perf_counter() - t0
        return out


def resolve_chat_template(tok, model_dir: Path, chat_template: str | None) -> str | None:
    """engine.chat_template (a file or the template text) over the tokenizer's own; neither is an error."""
    if chat_template:
        p = Path(chat_template)
        return p.read_text() if p.is_file() else chat_template
    if not getattr(tok, "chat_template", None):
        raise CheckpointError(f"{model_dir}: the tokenizer has no chat template; give engine.chat_template")
    return None


def render_prompts(tok, chat_template: str | None, conversations: Sequence[list[dict]], prefill: str = "") -> list[str]:
    """Each conversation as the prompt text the model continues (generation prompt + assistant prefill)."""
    return [tok.apply_chat_template(list(m), tokenize=False, add_generation_prompt=True,
                                    chat_template=chat_template) + prefill for m in conversations]


def cut_at_stop(text: str, stop: Sequence[str] | None) -> str:
    if not stop:
        return text
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text if cut == -1 else text[:cut]
