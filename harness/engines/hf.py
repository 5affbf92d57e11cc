"""HF transformers engine: batched greedy chat generation, weights swapped in place.

Left padding, the tokenizer's chat template (or one given by path, e.g. the MBPP instruction/response
template for base models), an optional assistant prefill, stop strings applied exactly (the text is cut
at the first occurrence, whatever the tokenisation). ``load_state_dict`` copies tensors into the existing
parameters: building the model happens once per worker, not once per child.

Prefix caching (``prefix_cache``, on by default): an agent benchmark's prompts share a long head (the OS
family's one-shot conversation is 142 of its 156-163 first-round tokens), and prefilling it again for every
row of every batch of every turn was more than half of the OS family's generation time in a profile. The shared head's keys and values are
computed once per weight swap and every batch starts from them; the rows' own tokens follow it, padded on
the left of their own part, so every token keeps the position and the attention it had without the cache.
The replies are the same text (checked on whole evaluations of the mini world's models, CPU float32, before
it became the default, and by a test on a random model). On an accelerator in bf16 other matrix shapes
may round differently and flip a near-tie, as any change of batching can: ``prefix_cache: false`` turns it
off. vLLM does the same with its own prefix cache.

The reserved cache (``reserve_cache``, on by default): generate()'s default cache concatenates the whole
cache at every decoding step, 45-54% of generation's CPU time in two profiles at the mini model's size; here
keys and values are written in place into room for the whole sequence and the model sees views of the
filled part (the same values). Both caches assume every layer attends to the whole sequence and turn
themselves off for sliding-window models.
"""

from __future__ import annotations

import functools
import os
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
                 batch_size: int = 16, max_length: int | None = None, prefix_cache: bool = True,
                 prefix_min_tokens: int = 16, reserve_cache: bool = True):
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
        # both caches assume every layer attends to the whole sequence (no sliding window)
        full = _full_attention_only(self.model.config)
        self.prefix_cache, self.reserve_cache = bool(prefix_cache) and full, bool(reserve_cache) and full
        self.prefix_min_tokens = int(prefix_min_tokens)
        # (weights version, tokens, per-layer (keys, values)): engines that share one model (another chat
        # template, another batch size) swap its weights too, so the cache is keyed by the model's version
        self._prefix: tuple[int, tuple[int, ...], list] | None = None

    @torch.no_grad()
    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Copy weights into the live model (same objects, same memory); every parameter must be given,
        except weights tied to one that is (lm_head to the embeddings)."""
        t0 = time.perf_counter()
        self.model._cycleqd_weights_version = getattr(self.model, "_cycleqd_weights_version", 0) + 1
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
        head = self._shared_head([ids[i] for i in fits]) if self.prefix_cache else None
        n_head = len(head[0]) if head else 0
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tok.pad({"input_ids": [ids[i][n_head:] for i in idx]}, return_tensors="pt").to(self.device)
            kwargs = self._after_head(head, enc) if head else dict(enc)
            # keys and values written in place into room for the whole sequence: the default cache
            # concatenates the whole of it at every step (most of a decoding step's time at this size)
            if self.reserve_cache or head:
                kwargs["past_key_values"] = reserved_cache(self.model.config.num_hidden_layers,
                                                           kwargs["input_ids"].shape[1] + max_new_tokens,
                                                           head[1] if head else None, len(idx))
            gen = self.model.generate(**kwargs, do_sample=False, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.tok.pad_token_id,
                                      stop_strings=list(stop) if stop else None,
                                      tokenizer=self.tok if stop else None)
            new = gen[:, kwargs["input_ids"].shape[1] :]
            for j, i in enumerate(idx):
                text = self.tok.decode(new[j], skip_special_tokens=True)
                out[i] = cut_at_stop(text, stop)
        self.seconds["generate"] += time.perf_counter() - t0
        return out

    def _shared_head(self, rows: Sequence[list[int]]) -> tuple[tuple[int, ...], list] | None:
        """The tokens every row starts with (each row keeps at least one of its own) and their per-layer keys
        and values, computed once for these weights; None when the shared head is too short to be worth it."""
        if not rows:
            return None
        n = min(len(os.path.commonprefix(list(rows))), min(len(r) for r in rows) - 1)
        if n < self.prefix_min_tokens:
            return None
        tokens = tuple(rows[0][:n])
        version = getattr(self.model, "_cycleqd_weights_version", 0)
        if self._prefix is None or self._prefix[:2] != (version, tokens):
            cache = self.model(torch.tensor([tokens], device=self.device), use_cache=True).past_key_values
            self._prefix = (version, tokens, [(layer.keys, layer.values) for layer in cache.layers])
        return self._prefix[1:]

    def _after_head(self, head, enc) -> dict:
        """generate()'s inputs for rows that continue the cached head: the whole sequences (generate skips
        the part the cache holds) and a mask that is 1 on the head."""
        tokens = head[0]
        b = enc["input_ids"].shape[0]
        head_ids = torch.tensor([tokens], device=self.device).expand(b, -1)
        ones = torch.ones(b, len(tokens), dtype=enc["attention_mask"].dtype, device=self.device)
        return {"input_ids": torch.cat([head_ids, enc["input_ids"]], 1),
                "attention_mask": torch.cat([ones, enc["attention_mask"]], 1)}


def _full_attention_only(config) -> bool:
    """True when every layer attends to the whole sequence (what a prefix or reserved cache assumes)."""
    types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return types == {"full_attention"} and not getattr(config, "sliding_window", None)


def reserved_cache(n_layers: int, capacity: int, head_kv: Sequence | None, batch: int):
    """A DynamicCache whose layers write keys and values into room reserved for ``capacity`` positions and
    hand the model views of the filled part: the same tensors, without the default layer's copy of the
    whole cache at every step. ``head_kv``: per-layer (keys, values) of a shared head (batch 1), copied
    into every row first."""
    layer_cls, cache_cls = _reserved_classes()
    cache = cache_cls([layer_cls(capacity) for _ in range(n_layers)])
    for layer, (k, v) in zip(cache.layers, head_kv or ()):
        layer.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
    return cache


@functools.cache
def _reserved_classes():
    """The reserved layer and its cache, defined on first use (transformers is the optional 'llm' extra)."""
    from transformers import DynamicCache
    from transformers.cache_utils import Cache, DynamicLayer

    class ReservedLayer(DynamicLayer):
        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity

        def lazy_initialization(self, key_states, value_states) -> None:
            super().lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self._k = key_states.new_empty(b, h, self.capacity, d)
            self._v = value_states.new_empty(b, h, self.capacity, d)
            self._n = 0

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            m = key_states.shape[-2]
            if self._n + m > self.capacity:
                raise RuntimeError(f"engine: the reserved cache holds {self.capacity} positions, {self._n + m} asked")
            self._k[:, :, self._n : self._n + m] = key_states
            self._v[:, :, self._n : self._n + m] = value_states
            self._n += m
            self.keys, self.values = self._k[:, :, : self._n], self._v[:, :, : self._n]
            return self.keys, self.values

    class ReservedCache(DynamicCache):
        def __init__(self, layers):
            Cache.__init__(self, layers=layers)

    return ReservedLayer, ReservedCache


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
