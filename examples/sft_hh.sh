#!/usr/bin/env bash
# Step 1: the SFT policy of the paper: Llama-3.1-8B fine-tuned on the chosen HH-RLHF dialogues with
# OpenRLHF's SFT (one 8-GPU node). Every DPO recipe starts from its output ($POLICY).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

SFT_SEED="${SFT_SEED:-42}"   # seed of the SFT run
SFT_EPOCHS="${SFT_EPOCHS:-1}" # one pass over the data

run_sft "$POLICY" "$SFT_SEED" "$SFT_EPOCHS"
