#!/usr/bin/env bash
# The paper's third experiment: online DPO from an over-fitted start. An SFT run deliberately trained
# for too many epochs, then online DPO with vanilla and with PILAF sampling from it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

OVERFIT_EPOCHS="${OVERFIT_EPOCHS:-6}" # SFT epochs, far past the one the main policy gets
OVERFIT_SEED="${OVERFIT_SEED:-42}"
OVERFIT_POLICY="${OVERFIT_POLICY:-$WORK/sft/llama3.1-8b-hh-overfit-${OVERFIT_EPOCHS}ep}"

run_sft "$OVERFIT_POLICY" "$OVERFIT_SEED" "$OVERFIT_EPOCHS"
for sampler in vanilla pilaf; do
  # The over-fitted SFT is both the starting policy and the DPO reference of these runs.
  POLICY="$OVERFIT_POLICY" REF="$OVERFIT_POLICY" RUN_DIR="$WORK/runs/overfit-online-$sampler" \
    "$HERE/online_dpo.sh" "$sampler"
done
