import pytest
import torch

from harness.engines.hf import HFEngine, cut_at_stop
from harness.errors import CheckpointError

CONV = [[{"role": "user", "content": "SELECT count(*) FROM table;"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "def add(a, b):"}]]


@pytest.fixture(scope="module")
def engine(tiny_llm):
    return HFEngine(str(tiny_llm), batch_size=4)


def manual_greedy(engine, prompt, n):
    ids = engine.tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        for _ in range(n):
            nxt = engine.model(ids).logits[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], 1)
    return engine.tok.decode(ids[0, -n:], skip_special_tokens=True)


def test_batched_left_padded_greedy_equals_one_at_a_time(engine):
    batch = engine.generate(CONV, max_new_tokens=8)
    single = [engine.generate([c], max_new_tokens=8)[0] for c in CONV]
    assert batch == single
    prompt = engine.prompts([CONV[0]])[0]
    assert batch[0] == manual_greedy(engine, prompt, 8)


def test_prefill_is_part_of_the_prompt(engine):
    assert engine.prompts([CONV[0]], prefill="```python")[0].endswith("<|assistant|>```python")


def test_weights_loaded_in_place_change_the_output(engine):
    model_id = id(engine.model)
    before = engine.generate(CONV, max_new_tokens=6)
    original = {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    noisy = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in original.items()}
    engine.load_state_dict(noisy)
    assert id(engine.model) == model_id  # no rebuild
    changed = engine.generate(CONV, max_new_tokens=6)
    assert changed != before
    engine.load_state_dict(original)
    assert engine.generate(CONV, max_new_tokens=6) == before


def test_engines_differing_in_template_share_one_model(engine, tiny_llm):
    other = HFEngine(str(tiny_llm), batch_size=2, chat_template="{{ messages }}")
    assert other.model is engine.model and other.chat_template != engine.chat_template


def test_bad_state_dict_names_the_tensor(engine):
    sd = {k: v.clone() for k, v in engine.model.state_dict().items()}
    first = next(iter(sd))
    with pytest.raises(CheckpointError, match="lacks parameter"):
        engine.load_state_dict({k: v for k, v in sd.items() if k != first})
    sd["model.norm.weight"] = torch.ones(7)
    with pytest.raises(CheckpointError, match="'model.norm.weight' has shape \\[7\\]"):
        engine.load_state_dict(sd)


def test_stop_strings_cut_exactly():
    assert cut_at_stop("code\nResponse: more", ["Response:", "Instruction"]) == "code\n"
    assert cut_at_stop("no stop here", ["X"]) == "no stop here"


def test_prompts_beyond_the_context_get_the_context_limit_reply(tiny_llm):
    from harness.engines import CONTEXT_LIMIT

    eng = HFEngine(str(tiny_llm), batch_size=4, max_length=40)
    long = [{"role": "user", "content": "SELECT count(*) FROM table; " * 20}]
    out = eng.generate([CONV[0], long], max_new_tokens=8)
    assert out[1] == CONTEXT_LIMIT and out[0] != CONTEXT_LIMIT
    assert out[0] == HFEngine(str(tiny_llm), batch_size=4).generate([CONV[0]], max_new_tokens=8)[0]


def test_context_limit_ends_episodes_as_the_models_failure():
    from domains.db import DBEpisode
    from envs.sql.sqlite import SQLiteBackend
    from harness.domain import SampleStatus
    from harness.engines import CONTEXT_LIMIT
    from harness.episodes import ScriptedAgent, run_episodes

    sample = {"description": "Delete the row of a.", "add_description": "", "type": ["DELETE"], "label": [],
              "answer_md5": "0" * 32,
              "table": {"table_name": "t", "table_info": {"columns": [{"name": "x"}], "rows": [["a"]]}}}
    ep = DBEpisode("db/0", sample, SQLiteBackend(), "instr", 5)
    run_episodes([ep], ScriptedAgent(lambda s, t, m: CONTEXT_LIMIT))
    assert ep.result.status == SampleStatus.CONTEXT_LIMIT and ep.result.detail["md5"]  # still judged


# -- the shared head's cache and the reserved cache: same replies as the plain path ----------------------
SHOT = [{"role": "system", "content": "You act on a Linux shell. Reply with Think: then Act: bash, " * 3},
        {"role": "user", "content": "How many files are in /etc/skel?"},
        {"role": "assistant", "content": "Act: bash\nls /etc/skel | wc -l"}]
TAILS = ["count lines of a.txt", "first word of /root/b.txt please", "x", "list /tmp and then /var and /opt"]


def plain(tiny_llm, **kw):
    return HFEngine(str(tiny_llm), batch_size=3, prefix_cache=False, reserve_cache=False, **kw)


def test_shared_head_and_reserved_cache_give_the_plain_replies(tiny_llm):
    convs = [SHOT + [{"role": "user", "content": t}] for t in TAILS]
    later = [c + [{"role": "assistant", "content": "Act: bash\nls"}, {"role": "user", "content": "The output: a b"}]
             for c in convs]
    fast = HFEngine(str(tiny_llm), batch_size=3)  # defaults: both caches on
    assert fast.prefix_cache and fast.reserve_cache
    slow = plain(tiny_llm)
    for batch in (convs, later, convs[:1], later[2:]):  # batches of 3 + 1 rows; a later turn reuses the head
        assert fast.generate(batch, max_new_tokens=10) == slow.generate(batch, max_new_tokens=10)
        assert fast.generate(batch, stop=["a"], max_new_tokens=10) == slow.generate(batch, stop=["a"], max_new_tokens=10)
    head = fast._shared_head(fast.tok(fast.prompts(convs), add_special_tokens=False)["input_ids"])
    assert head is not None and len(head[0]) > 30  # the one-shot part really was shared
    only_reserve = HFEngine(str(tiny_llm), batch_size=3, prefix_cache=False)
    assert only_reserve.generate(later, max_new_tokens=10) == slow.generate(later, max_new_tokens=10)


def test_a_short_shared_head_is_not_cached(tiny_llm):
    eng = HFEngine(str(tiny_llm), prefix_min_tokens=1000)
    rows = eng.tok(eng.prompts([SHOT + [{"role": "user", "content": t}] for t in TAILS]), add_special_tokens=False)
    assert eng._shared_head(rows["input_ids"]) is None
    assert eng._shared_head([[5, 6, 7], [8, 6, 7]]) is None  # nothing in common


def test_the_head_cache_follows_weights_swapped_by_another_engine(tiny_llm):
    """Engines that share one model (another template, batch size) swap its weights too: a head cached with
    the old weights must not be used with the new ones."""
    convs = [SHOT + [{"role": "user", "content": t}] for t in TAILS]
    a = HFEngine(str(tiny_llm), batch_size=4)
    b = HFEngine(str(tiny_llm), batch_size=2)
    assert a.model is b.model
    original = {k: v.detach().clone() for k, v in a.model.state_dict().items()}
    a.load_state_dict(original)
    before = a.generate(convs, max_new_tokens=8)  # caches the head with the original weights
    g = torch.Generator().manual_seed(3)
    b.load_state_dict({k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in original.items()})
    try:
        after = a.generate(convs, max_new_tokens=8)
        assert after == plain(tiny_llm).generate(convs, max_new_tokens=8)
        assert after != before
    finally:
        a.load_state_dict(original)


def test_caches_turn_themselves_off_for_sliding_window_models():
    from types import SimpleNamespace

    from harness.engines.hf import _full_attention_only

    assert _full_attention_only(SimpleNamespace(num_hidden_layers=2))
    assert _full_attention_only(SimpleNamespace(layer_types=["full_attention"] * 2, sliding_window=None))
    assert not _full_attention_only(SimpleNamespace(sliding_window=4096))
    assert not _full_attention_only(SimpleNamespace(layer_types=["sliding_attention", "full_attention"]))
