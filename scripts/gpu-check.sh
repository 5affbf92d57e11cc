#!/usr/bin/env bash
# The GPU paths, end to end, in under 5 minutes on a machine with one or more CUDA GPUs and vLLM (CUDA build)
# installed in this venv. CI never runs it (no GPU there); run it whenever a GPU machine is at hand and keep
# its output with the change. Usage: bash scripts/gpu-check.sh [PYTHON]   (default: .venv/bin/python)
#   1. the vLLM engine's in-place weight swap on a tiny Llama (tests/harness/engines/test_vllm.py with this Python)
#   2. merges and mutations on cuda: `cycleqd bench scale --device cuda` on a 50M-parameter Llama shape
#   3. one worker per GPU (two if there are two): a vector-world CycleQD run with runner.executor=gpu and
#      model.device=cuda, whose archives must equal the inline CPU run's up to float rounding (compared loosely)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
CYCLEQD="$PY -m harness.cli"
out=$(mktemp -d)
echo "== GPUs"; nvidia-smi --query-gpu=index,name,memory.total --format=csv
n=$("$PY" -c "import torch; print(torch.cuda.device_count())")
[ "$n" -ge 1 ] || { echo "gpu-check: torch sees no CUDA device" >&2; exit 1; }
echo "== 1. vLLM weight swap (pytest, this Python)"
CYCLEQD_VLLM_PYTHON="$PY" timeout 180 "$PY" -m pytest -q tests/harness/engines/test_vllm.py
echo "== 2. merge + mutation on cuda (bench scale, 5e7 parameters, 5 generations)"
timeout 180 $CYCLEQD bench scale --params 5e7 --generations 5 --device cuda --root "$out/bench" --json
workers=$(( n >= 2 ? 2 : 1 ))
echo "== 3. $workers GPU worker(s): vector world, 20 generations"
timeout 120 $CYCLEQD run configs/vector_world.yaml qd.generations=20 runner.progress=false runner.executor=gpu \
  runner.workers=$workers model.device=cuda --run-dir "$out/gpu"
timeout 120 $CYCLEQD run configs/vector_world.yaml qd.generations=20 runner.progress=false \
  runner.workers=$workers --run-dir "$out/cpu"
"$PY" - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
a = json.loads((out / "gpu" / "results.json").read_text())
b = json.loads((out / "cpu" / "results.json").read_text())
ga = {r["model"]: r["test"]["avg"] for r in a["rows"]}
gb = {r["model"]: r["test"]["avg"] for r in b["rows"]}
print("gpu run:", ga)
print("cpu run:", gb)
assert abs(ga["cycleqd"] - gb["cycleqd"]) <= 0.05, "GPU and CPU runs disagree beyond rounding"
print("gpu-check: OK")
PY
