"""Test scores split by question kind (leaderboards/mini_kinds.py), on hand-made verdicts."""

from types import SimpleNamespace

from domains.mini import world as W
from domains.mini.kinds import chosen_kinds, kinds_of
from leaderboards.mini_kinds import kind_scores, kinds_markdown


def _ctx(samples_by_task, verdicts):
    domains = {t: SimpleNamespace(samples=lambda s=s: s) for t, s in samples_by_task.items()}
    return SimpleNamespace(tasks=list(samples_by_task), evaluator=SimpleNamespace(domains=domains),
                           verdicts=SimpleNamespace(rows=verdicts))


def test_rows_split_by_the_kinds_the_expert_trained_on():
    recipe = W.recipe(expert_kinds={"code": 0.5, "os": 1.0, "db": 0.5})
    fams = ("code", "os", "db")
    samples = {f"mini-{f}": [{"mini": {"kind": k}} for k in kinds_of(f) for _ in range(2)] for f in fams}
    trained = {f: set(chosen_kinds(f, 0.5, 0)) if f != "os" else set(kinds_of(f)) for f in fams}
    # the expert solves exactly its trained kinds; the merge exactly the others; one row has no verdicts
    expert = {t: [[i, float(s["mini"]["kind"] in trained[f])] for i, s in enumerate(samples[t])]
              for f, t in zip(fams, samples)}
    merge = {t: [[i, 1.0 - v] for i, v in pairs] for t, pairs in expert.items()}
    ctx = _ctx(samples, {"test:e": {"verdicts": expert}, "test:m": {"verdicts": merge}})
    got = kind_scores(ctx, fams, {"Expert": "e", "Merge": "m", "Lost": "gone", "No key": None}, recipe)
    code = got["mini-code"]
    assert code["trained_kinds"] == sorted(trained["code"]) and code["n"] == {"trained": 12, "untrained": 12}
    assert code["rows"]["Expert"]["trained"] == 1.0 and code["rows"]["Expert"]["untrained"] == 0.0
    assert code["rows"]["Merge"]["trained"] == 0.0 and code["rows"]["Merge"]["untrained"] == 1.0
    assert set(code["rows"]) == {"Expert", "Merge"}
    assert code["rows"]["Expert"]["by_kind"] == {k: float(k in trained["code"]) for k in kinds_of("code")}
    assert got["mini-os"]["n"] == {"trained": 10, "untrained": 0}
    assert got["mini-os"]["rows"]["Expert"]["untrained"] is None
    md = kinds_markdown(got, {"mini-code": "Code"})
    assert "#### Code: the expert trained on" in md and "| Expert | 100.0 | 0.0 |" in md
    assert "mini-os" not in md  # an expert that trained on every kind has nothing to split
    assert kinds_markdown(kind_scores(ctx, fams, {"Expert": "e"}, W.recipe()), {}) == ""
