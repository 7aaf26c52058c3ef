#!/usr/bin/env bash
# The paper's iterative DPO: each round, the current policy samples a pair per prompt with SAMPLER, the
# oracle labels the whole set, then DPO trains on it; evaluated on held-out prompts after every round.
# Round 1 uses vanilla pairs for every sampler (the paper starts every method from the same model).
#
#   examples/iterative_dpo.sh SAMPLER       # SAMPLER: vanilla | best_of_n | hybrid | pilaf
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

SAMPLER="${1:-}"
require_sampler "$SAMPLER"
require_cluster
SEED="${SEED:-42}"
ROUNDS="${ROUNDS:-3}"                        # rounds of (sample + label, then train)
EPOCHS="${EPOCHS:-2}"                        # passes over each round's pairs
PROMPTS_PER_ROUND="${PROMPTS_PER_ROUND:-20000}" # prompts (= pairs) labelled per round
RUN_DIR="${RUN_DIR:-$WORK/runs/iterative-$SAMPLER-seed$SEED}"

dpo_common_args "$SAMPLER" "$RUN_DIR" "$SEED"
launch openrlhf_pilaf.cli.train_dpo_ray "${DPO_COMMON[@]}" \
  --dpo.mode iterative \
  --dpo.rounds "$ROUNDS" \
  --dpo.epochs "$EPOCHS" \
  --dpo.prompts_per_round "$PROMPTS_PER_ROUND" \
  --dpo.first_round_sampler vanilla
# --dpo.mode iterative: rounds instead of steps; --dpo.rounds / --dpo.epochs / --dpo.prompts_per_round: see
# above; --dpo.first_round_sampler vanilla: round 1's pairs are vanilla whatever SAMPLER is. With
# --eval.dataset (from _common.sh) the run evaluates after every round (--eval.steps is online-only).
