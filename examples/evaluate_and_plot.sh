#!/usr/bin/env bash
# Evaluate the final policy of each run (oracle reward, KL to the SFT reference, J) and draw the runs'
# evaluation curves. Evaluation reads local checkpoints only: download the oracle once, e.g.
#   huggingface-cli download Skywork/Skywork-Reward-Llama-3.1-8B --local-dir "$WORK/models/Skywork-Reward-Llama-3.1-8B"
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

SEED="${SEED:-42}"
RM_DIR="${RM_DIR:-$WORK/models/Skywork-Reward-Llama-3.1-8B}" # local copy of $RM
SETTINGS="${SETTINGS:-online iterative}"                      # which runs of the DPO recipes to evaluate

for setting in $SETTINGS; do
  runs=()
  for sampler in "${PILAF_SAMPLERS[@]}"; do
    run_dir="$WORK/runs/$setting-$sampler-seed$SEED"
    runs+=("$run_dir")
    # --model: the run's final policy (online: final/; iterative: the last round's model, also final/);
    # --ref: the KL reference (the SFT policy); --reward: the oracle; --data: held-out prompts, formatted
    # as in training; 4 responses per prompt from the policy itself (temperature 1) through vLLM;
    # --beta: the beta of J = reward - beta * KL; --out: the JSON summary.
    run "$PYTHON" -m openrlhf_pilaf.cli.evaluate \
      --model "$run_dir/final" \
      --ref "$REF" \
      --reward "$RM_DIR" \
      --data "$DATA_DIR/prompts_test.jsonl" \
      --data.input_key prompt \
      --data.apply_chat_template \
      --data.max_samples 512 \
      --samples_per_prompt 4 \
      --max_new_tokens 512 \
      --beta 0.1 \
      --engine vllm \
      --out "$run_dir/eval_final.json"
  done
  # Reward against KL and J against labels spent, one colour per sampler, from each run's eval.jsonl.
  run "$PYTHON" -m openrlhf_pilaf.cli.plot "${runs[@]}" \
    --out "$WORK/plots/$setting-curves.png" \
    --title "$setting DPO on HH-RLHF (Llama-3.1-8B SFT, Skywork oracle)"
done
