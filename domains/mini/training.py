"""Tokenizer and tiny-Llama training for the mini world: deterministic, CPU, minutes.

* ``train_tokenizer``: a byte-level BPE (``tokenizers``) on the rendered corpus, with role tokens and a
  chat template ``<|role|>\\ncontent<|end|>\\n``; ``<|end|>`` is the end-of-turn (eos) token, so greedy
  generation stops at the end of a reply.
* ``train``: causal-LM training on whole conversations, the loss only on assistant tokens (and their
  ``<|end|>``): AdamW, linear warm-up then cosine decay, gradient clipping, batches of similar length.
  The same function pretrains the base (from a random init) and fine-tunes experts (from the base).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from harness.schedules import warmup_cosine

ROLES = ("system", "user", "assistant")
SPECIAL = ["<|pad|>", "<|end|>"] + [f"<|{r}|>" for r in ROLES]
CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' }}\n{{ m['content'] }}<|end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def render(messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text of a conversation and the character spans the loss is taken on (each
    assistant content with its ``<|end|>``). Must agree with CHAT_TEMPLATE (a test checks it)."""
    parts, spans, pos = [], [], 0
    for m in messages:
        head = f"<|{m['role']}|>\n"
        body = m["content"] + "<|end|>"
        if m["role"] == "assistant":
            spans.append((pos + len(head), pos + len(head) + len(body)))
        chunk = head + body + "\n"
        parts.append(chunk)
        pos += len(chunk)
    return "".join(parts), spans


def train_tokenizer(texts: Sequence[str], vocab_size: int, out_dir: Path):
    # optional: tokenizers and transformers come with the 'llm' extra
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def encode(tok, conversations: Sequence[Sequence[dict]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, loss mask) per conversation; conversations longer than ``max_len`` tokens are an error
    (silently cutting them would train on half a protocol)."""
    out = []
    for conv in conversations:
        text, spans = render(conv)
        enc = tok(text, return_offsets_mapping=True, add_special_tokens=False)
        mask = [int(any(a <= s < b for a, b in spans)) for s, _ in enc["offset_mapping"]]
        if len(enc["input_ids"]) > max_len:
            raise ValueError(f"a training conversation has {len(enc['input_ids'])} tokens > max_len {max_len}")
        out.append((enc["input_ids"], mask))
    return out


def new_model(tok, *, hidden: int, layers: int, heads: int, intermediate: int, max_len: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM  # optional: the 'llm' extra

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_len, tie_word_embeddings=False, rope_theta=10000.0,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


def train(model, data: Sequence[tuple[list[int], list[int]]], *, steps: int, batch_size: int, lr: float,
          warmup: int, seed: int, weight_decay: float = 0.0, pad_id: int = 0, progress: str | None = None) -> list[float]:
    """Train in place; returns the loss per step. Batches are drawn by a seeded shuffle of
    length-sorted chunks, so the same seed gives the same model."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    order = sorted(range(len(data)), key=lambda i: len(data[i][0]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    model.train()
    losses: list[float] = []
    queue: list[list[int]] = []
    for step in tqdm(range(steps), desc=progress or "train", disable=progress is None, leave=False):
        if not queue:
            queue = chunks[:]
            rng.shuffle(queue)
        idx = queue.pop()
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        attn = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            x, m = data[i]
            ids[r, : len(x)] = torch.tensor(x)
            attn[r, : len(x)] = 1
            labels[r, : len(x)] = torch.tensor([t if k else -100 for t, k in zip(x, m)])
        for g in opt.param_groups:
            g["lr"] = warmup_cosine(step, steps, lr, warmup)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
