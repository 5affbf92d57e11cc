"""The mini world's language-retention tasks: lm-eval task YAMLs over text the world's own agents wrote.

The mini base model's "general language" is the text of its pretraining: the three families' protocols
(chat-rendered conversations of the noise agents and some or all of the gold agents', ``world.py``). Its Table 3
analogue asks whether a model still models that text after fine-tuning or merging. The documents are the
gold conversations the base was *not* pretrained on (each family's tail beyond ``pretrain_gold``; a world
pretrained on all of them, as the default is, gets the gold agent's conversations on the noise split's
questions, recorded once through the real domain, less those the noise agent happened to hold word for
word: no model was trained on the rest); each
expert was fine-tuned on its own family's, so, as in the paper, an expert may gain on its own family's text
and lose on the others'.

Per family two lm-eval tasks (written as JSONL + YAML at run time, never committed; ``dataset_path: json``
with absolute ``data_files``, so they run offline):

- ``mini_retention_<family>_reply``: every assistant reply of the conversation (those of a fixed one-shot
  example excepted, and its first token: see ``_reply_doc``) given the conversation before it:
  ``bits_per_byte`` of the reply (lower is better) and ``greedy`` (greedy decoding reproduces it exactly).
  Only replies: the models were trained on the assistant's text, never on the prompts.
- ``mini_retention_<family>_choice``: at the first assistant turn that is not part of a fixed prompt, pick
  the real reply among four (HellaSwag-like, ``acc``): the real one, another conversation's reply of the
  same family (well formed, wrong names and values for this question), a reply of another family (wrong
  protocol) and the real reply with its words shuffled (broken syntax).

Nothing here changes the world's recipe hash: this module is not among ``world._SOURCES``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from domains.mini import families as F
from domains.mini import training as T
from domains.mini.world import per_family, record
from harness.errors import ConfigError
from harness.worlds import publish_stage

FAMILIES = ("code", "os", "db")
VERSION = 2  # bump when the items change: the folder name carries it, so old task folders are not reused

YAML_HEAD = """# written by domains/mini/retention_tasks.py; data: {data}
task: {name}
tag: mini_retention
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""  # what both task kinds share: a local JSON file, one test split
CHOICE_YAML = YAML_HEAD + """output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
metadata: {{version: {version}}}
"""
REPLY_YAML = YAML_HEAD + """output_type: loglikelihood
doc_to_text: context
doc_to_target: reply
target_delimiter: ""
process_results: !function utils.process_results
metric_list:
  - {{metric: bits_per_byte, aggregation: mean, higher_is_better: false}}
  - {{metric: greedy, aggregation: mean, higher_is_better: true}}
metadata: {{version: {version}}}
"""
# lm-eval imports this beside the YAMLs (``!function utils.process_results``): the reply's cost in bits per
# UTF-8 byte, and whether greedy decoding reproduces it exactly
UTILS_PY = """import math


def process_results(doc, results):
    loglikelihood, is_greedy = results[0]
    return {"bits_per_byte": -loglikelihood / (len(doc["reply"].encode()) * math.log(2)), "greedy": float(is_greedy)}
"""


def task_names(family: str) -> tuple[str, str]:
    """(choice task, reply task) of a family."""
    return f"mini_retention_{family}_choice", f"mini_retention_{family}_reply"


def held_out(world: Path, family: str) -> list[list[dict]]:
    """The family's gold conversations that were not in the base's pretraining mix (``world.make_base``
    takes the first ``round(pretrain_gold * n)``). With none left (``pretrain_gold`` 1), the gold agent's
    conversations on the noise split's questions (recorded once into ``<world>/retention_gold/``), less
    any that equals a noise conversation: the noise agent's random first action is sometimes the right
    one, and in OS and DB its later turns follow the gold policy, so such a conversation was pretrained on."""
    traj, recipe = world / "trajectories" / f"{family}_gold.json", world / "recipe.json"
    if not traj.is_file() or not recipe.is_file():
        raise ConfigError(f"retention tasks: {world} is not a built mini world (no {traj.name} or recipe.json)")
    gold = json.loads(traj.read_text())
    r = json.loads(recipe.read_text())
    frac = float(per_family({"pretrain_gold": 0.0, **r}, "pretrain_gold", family))
    tail = gold[int(round(frac * len(gold))):]
    if tail:
        return tail

    def make(tmp: Path) -> None:
        convs = record(family, world / "data", f"{family}_noise.jsonl", F.FAMILIES[family]["gold"], True,
                       int(r.get("seed", 0)))
        (tmp / "gold.json").write_text(json.dumps(convs))

    recorded = json.loads((publish_stage(world / "retention_gold" / family, make) / "gold.json").read_text())
    noise_file = world / "trajectories" / f"{family}_noise.json"
    seen = {json.dumps(c) for c in json.loads(noise_file.read_text())} if noise_file.is_file() else set()
    convs = [c for c in recorded if json.dumps(c) not in seen]
    if not convs:
        raise ConfigError(f"retention tasks: {world} has no held-out {family} conversation (every gold one was "
                          f"in pretraining, and the noise split gives none the base has not seen)")
    return convs


def _turn(convs: list[list[dict]]) -> int:
    """The first assistant turn whose reply differs between conversations (a one-shot example's replies do
    not: they are part of the prompt)."""
    n = min(len(c) for c in convs)
    for i in range(n):
        if convs[0][i]["role"] == "assistant" and len({c[i]["content"] for c in convs}) > 1:
            return i
    raise ConfigError("retention tasks: no assistant turn varies between the held-out conversations")


def _shuffled(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for _ in range(10):
        rng.shuffle(words)
        out = " ".join(words)
        if out != text:
            return out
    return text[::-1]


def _reply_doc(doc_id: str, conv: list[dict], t: int, tok) -> dict:
    """Reply ``t`` of ``conv`` as (context, reply). lm-eval moves a context's trailing whitespace into the
    continuation, and no model here was trained to predict the newline after the assistant header (training
    scores the replies only): that token would cost ~8 nats and drown the signal. So the reply's first token
    (a protocol constant: "```", "Think", "Run", ...) ends the context instead, cut where the world's own
    tokenizer cuts, so that context and context + reply tokenize alike (lm-eval encodes them apart)."""
    context, content = T.render(conv[:t])[0] + "<|assistant|>\n", conv[t]["content"] + "<|end|>"
    cut = tok.encode(content, add_special_tokens=False).offsets[0][1]
    head = tok.encode(context + content[:cut], add_special_tokens=False).ids
    if tok.encode(context + content, add_special_tokens=False).ids[: len(head)] != head:
        raise ConfigError(f"retention tasks: {doc_id}: the reply's first token does not end a token of the context")
    return {"id": doc_id, "context": context + content[:cut], "reply": content[cut:]}


def make_items(world: Path, limit: int | None, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """{family: {"choice": [...], "reply": [...]}} from at most ``limit`` conversations each, seeded."""
    tok_file = world / "tokenizer" / "tokenizer.json"
    if not tok_file.is_file():
        raise ConfigError(f"retention tasks: {world} has no tokenizer/tokenizer.json (not a built mini world)")
    from tokenizers import Tokenizer  # optional: the 'llm' extra

    tok = Tokenizer.from_file(str(tok_file))
    convs = {f: held_out(world, f) for f in FAMILIES}
    turns = {f: _turn(c) for f, c in convs.items()}
    replies = {f: [c[turns[f]]["content"] for c in cs] for f, cs in convs.items()}
    out = {}
    for f in FAMILIES:
        rng = random.Random(f"mini-retention:{f}:{seed}")
        docs = convs[f][:limit] if limit else convs[f]
        choice = []
        for i, conv in enumerate(docs):
            i_turn = turns[f]
            real = conv[i_turn]["content"]
            same = [r for r in replies[f] if r != real]
            other = [r for g in FAMILIES if g != f for r in replies[g]]
            options = [real, rng.choice(same), rng.choice(other), _shuffled(real, rng)]
            order = list(range(4))
            rng.shuffle(order)
            context = T.render(conv[:i_turn])[0] + "<|assistant|>\n"
            choice.append({"id": f"{f}/{i}", "context": context,
                           "choices": [options[j] + "<|end|>" for j in order], "label": order.index(0)})
        reply = [_reply_doc(f"{f}/{i}/{t}", conv, t, tok)
                 for i, conv in enumerate(docs) for t in range(turns[f], len(conv)) if conv[t]["role"] == "assistant"]
        out[f] = {"choice": choice, "reply": reply}
    return out


def write_tasks(world: str | Path, out_dir: str | Path, limit: int | None = None, seed: int = 0) -> Path:
    """Write the six tasks (JSONL + YAML, and the reply tasks' ``utils.py``) into
    ``out_dir/mini-v<VERSION>-<limit>-s<seed>`` once (cached) and return that folder: lm-eval's ``include_path``."""
    world, out_dir = Path(world), Path(out_dir)
    folder = out_dir / f"mini-v{VERSION}-{limit or 'all'}-s{seed}"

    def make(tmp: Path) -> None:
        for f, items in make_items(world, limit, seed).items():
            for name, rows, yaml in zip(task_names(f), (items["choice"], items["reply"]), (CHOICE_YAML, REPLY_YAML)):
                data = folder / f"{name}.jsonl"  # the final path: the YAML must name where the data will be
                (tmp / data.name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                (tmp / f"{name}.yaml").write_text(yaml.format(name=name, data=data, version=VERSION))
        (tmp / "utils.py").write_text(UTILS_PY)

    return publish_stage(folder, make)


def tasks_for_base(base: str | Path, limit: int | None = None, seed: int = 0) -> Path:
    """``tasks_from`` of ``configs/retention/mini.yaml``: the tasks of the mini world whose base is ``base``,
    cached in that world's directory (``<world>/retention/``)."""
    world = Path(base).parent
    return write_tasks(world, world / "retention", limit, seed)
