#!/usr/bin/env bash
# Step 0: Anthropic HH-RLHF as the local JSONL files every recipe reads (into $DATA_DIR), and the oracle's
# chat template. Needs network access to the Hugging Face hub once; everything after reads local files.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

# Held-out prompts kept for evaluation (from the test split).
EVAL_PROMPTS="${EVAL_PROMPTS:-2000}"

# --dataset: the hub dataset (its train split becomes prompts_train.jsonl and sft_train.jsonl, its test
#   split prompts_test.jsonl); --out: where to write; --eval_prompts: how many test prompts to keep;
# --chat_template_from: whose tokenizer's chat template to save (the oracle's, so the SFT policy uses it).
run "$PYTHON" "$HERE/prepare_hh_rlhf.py" \
  --dataset Anthropic/hh-rlhf \
  --out "$DATA_DIR" \
  --eval_prompts "$EVAL_PROMPTS" \
  --chat_template_from "$RM"
