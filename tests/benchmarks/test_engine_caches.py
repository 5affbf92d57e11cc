"""The HF engine's caches (the prompts' shared head prefilled once, keys and values written into reserved
room) against the plain path, in the same process: the same replies, and generation at least a little
faster.

An agent family's prompts share a long head (the OS family's one-shot conversation is 142 of its 156-163
first-turn tokens). The model here is the mini world's size in width (hidden 128) on a random 2-layer
Llama, with 16 such prompts in one batch and a second turn that extends each of them.
"""

import time

from harness.engines.hf import HFEngine
from tests.conftest import build_tiny_llm

HEAD = [{"role": "system", "content": "You act on a Linux shell. Reply with Think: then Act: bash. " * 4},
        {"role": "user", "content": "How many files are in /etc/skel?"},
        {"role": "assistant", "content": "Think: count them.\nAct: bash\nls /etc/skel | wc -l"},
        {"role": "user", "content": "The output of the OS:\n3"}]


def test_engine_caches_vs_plain_generation(benchmark, tmp_path):
    model = build_tiny_llm(tmp_path / "m", hidden=128, heads=4, kv_heads=4)
    first = [HEAD + [{"role": "user", "content": f"How many lines of /root/f{i}.txt contain word {i}?"}]
             for i in range(16)]
    later = [c + [{"role": "assistant", "content": "Act: bash\ngrep -c w f.txt"}, {"role": "user", "content": "2"}]
             for c in first]
    fast = HFEngine(str(model), batch_size=16)
    plain = HFEngine(str(model), batch_size=16, prefix_cache=False, reserve_cache=False)
    times = {"fast": [], "plain": []}
    replies = {}

    def both():
        for name, eng in (("plain", plain), ("fast", fast)):  # alternate: a transient load hits both
            eng.load_state_dict(dict(eng.model.state_dict()))  # as every evaluation does: the head is recomputed
            t0 = time.perf_counter()
            replies[name] = eng.generate(first, max_new_tokens=24) + eng.generate(later, max_new_tokens=24)
            times[name].append(time.perf_counter() - t0)

    benchmark.pedantic(both, rounds=5, iterations=1, warmup_rounds=1)
    assert replies["fast"] == replies["plain"]
    ratio = min(times["plain"]) / min(times["fast"])
    benchmark.extra_info.update(plain_s=min(times["plain"]), fast_s=min(times["fast"]), speedup=ratio)
    print(f"\ngeneration: plain {min(times['plain']):.3f} s, with the caches {min(times['fast']):.3f} s, {ratio:.2f}x")
    # measured here: 1.45x on the mini world's models beside a CycleQD run; the floor is below the noise
    # of a shared 2-core machine, and catches a cache that costs more than it saves
    assert ratio >= 1.1, f"the engine's caches make generation only {ratio:.2f}x faster (floor 1.1)"
