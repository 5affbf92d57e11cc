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
