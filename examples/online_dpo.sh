#!/usr/bin/env bash
# The paper's online DPO: every step samples one pair per prompt with SAMPLER, the oracle labels it and
# the policy takes a DPO step on exactly those pairs; evaluated on held-out prompts every 50 steps.
#
#   examples/online_dpo.sh SAMPLER          # SAMPLER: vanilla | best_of_n | hybrid | pilaf
#   NODES=2 RAY_ADDRESS=auto examples/online_dpo.sh pilaf   # on the head of a 2-node Ray cluster
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

SAMPLER="${1:-}"
require_sampler "$SAMPLER"
require_cluster
SEED="${SEED:-42}"                  # run seed (prompt order, sampler coins, labels)
MAX_STEPS="${MAX_STEPS:-500}"       # online steps (64 pairs each)
RUN_DIR="${RUN_DIR:-$WORK/runs/online-$SAMPLER-seed$SEED}"

dpo_common_args "$SAMPLER" "$RUN_DIR" "$SEED"
launch openrlhf_pilaf.cli.train_dpo_ray "${DPO_COMMON[@]}" \
  --dpo.mode online \
  --train.max_steps "$MAX_STEPS" \
  --eval.steps 50 \
  --ckpt.save_steps 50
# --dpo.mode online: generate, label and train every step; --train.max_steps: stop after that many steps;
# --eval.steps 50: evaluate (reward, KL, J) every 50 steps; --ckpt.save_steps 50: checkpoint as often,
# so a killed run resumes (--ckpt.load_enable) without paying for any label twice.
