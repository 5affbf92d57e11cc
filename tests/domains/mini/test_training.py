"""Mini-world training: the rendered text equals the chat template, the loss covers assistant tokens only,
training is deterministic and lowers the loss."""

import pytest

pytest.importorskip("transformers")

from domains.mini import training as T  # noqa: E402
from harness.schedules import warmup_cosine  # noqa: E402

CONV = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Repeat after me: kilo 12"},
        {"role": "assistant", "content": "kilo 12"}, {"role": "user", "content": "again"},
        {"role": "assistant", "content": "kilo 12 kilo"}]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    texts = [T.render(CONV)[0]] * 20 + ["Repeat after me: alpha bravo 7 /root/x"] * 20
    return T.train_tokenizer(texts, 300, tmp_path_factory.mktemp("tok"))


def test_render_matches_the_chat_template(tok):
    text, spans = T.render(CONV)
    assert text == tok.apply_chat_template(CONV, tokenize=False)
    assert [text[a:b] for a, b in spans] == ["kilo 12<|end|>", "kilo 12 kilo<|end|>"]
    prompt = tok.apply_chat_template(CONV[:2], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt)


def test_loss_mask_is_exactly_the_assistant_tokens(tok):
    (ids, mask), = T.encode(tok, [CONV], max_len=256)
    kept = tok.decode([t for t, m in zip(ids, mask) if m])
    assert kept == "kilo 12<|end|>kilo 12 kilo<|end|>"
    with pytest.raises(ValueError, match="max_len"):
        T.encode(tok, [CONV], max_len=5)


def test_lr_schedule_warms_up_then_decays():
    lrs = [warmup_cosine(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.01


def test_training_is_deterministic_and_learns(tok):
    data = T.encode(tok, [CONV] * 8, max_len=256)

    def run():
        m = T.new_model(tok, hidden=32, layers=1, heads=2, intermediate=64, max_len=256, seed=0)
        losses = T.train(m, data, steps=80, batch_size=4, lr=1e-2, warmup=5, seed=0, pad_id=tok.pad_token_id)
        return m, losses

    m1, l1 = run()
    m2, l2 = run()
    assert l1 == l2
    assert all((a == b).all() for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert l1[-1] < 0.3 * l1[0]
