#!/usr/bin/env bash
# SALSA: a soup of two SFT runs (same base model and data, different seeds) as the KL reference (and the
# initial policy) of PPO and of online DPO.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/_common.sh"

SFT_A="${SFT_A:-$WORK/sft/salsa-seed1}"
SFT_B="${SFT_B:-$WORK/sft/salsa-seed2}"
SOUP="${SOUP:-$WORK/soup/salsa-seed1-seed2}"
SALSA_SAMPLER="${SALSA_SAMPLER:-pilaf}" # the DPO run's sampler

# 1. Two SFT runs that differ only in --train.seed (one epoch each).
run_sft "$SFT_A" 1 1
run_sft "$SFT_B" 2 1

# 2. The soup: the uniform average of the two (weights 0.5 0.5), in bf16; re-running reuses it.
run "$PYTHON" -m openrlhf_pilaf.cli.build_soup \
  --soup.ingredients "$SFT_A" "$SFT_B" \
  --soup.weights 0.5 0.5 \
  --soup.dtype bf16 \
  --soup.output "$SOUP"

# 3. PPO (OpenRLHF's, all its flags) with the soup as reference and as initial policy.
ppo_args=(
  # our flags: the ingredients (same order and weights, so the soup of step 2 is reused, not rebuilt),
  # and --salsa.init_policy: the policy and the vLLM engines start from the soup too, as in the paper
  --salsa.ingredients "$SFT_A" "$SFT_B"
  --salsa.weights 0.5 0.5
  --salsa.dtype bf16
  --salsa.output "$SOUP"
  --salsa.init_policy
  # OpenRLHF's: the reward model (also the critic's initialisation, GAE being the default estimator)
  --reward.model_name_or_path "$RM"
  # KL penalty to the (soup) reference in the reward
  --algo.kl.init_coef 0.05
  # HH-RLHF prompts, as chat messages
  --data.prompt_dataset "$DATA_DIR/prompts_train.jsonl"
  --data.input_key prompt
  --data.apply_chat_template
  --data.max_len 2048
  --rollout.max_new_tokens 512
  # prompts per rollout and per experience forward; samples per optimizer step and per GPU forward
  --rollout.batch_size 128
  --rollout.micro_batch_size 4
  --train.batch_size 128
  --train.micro_batch_size 2
  # one pass over the prompts, one PPO epoch per rollout
  --train.num_episodes 1
  --train.max_epochs 1
  # learning rates of the policy and of the critic
  --actor.adam.lr 5e-7
  --critic.adam.lr 9e-6
  # one 8-GPU node: actor, reference, critic, reward model and vLLM engines share all 8 GPUs, each asleep
  # (offloaded) while the others run
  --actor.num_nodes 1
  --actor.num_gpus_per_node "$GPUS_PER_NODE"
  --ref.num_nodes 1
  --ref.num_gpus_per_node "$GPUS_PER_NODE"
  --critic.num_nodes 1
  --critic.num_gpus_per_node "$GPUS_PER_NODE"
  --reward.num_nodes 1
  --reward.num_gpus_per_node "$GPUS_PER_NODE"
  --train.colocate_all
  --vllm.num_engines $((GPUS_PER_NODE / 2))
  --vllm.tensor_parallel_size 2
  --vllm.gpu_memory_utilization 0.5
  --vllm.enable_sleep
  --ds.enable_sleep
  # ZeRO-3 in bf16 with activation recomputation
  --ds.zero_stage 3
  --ds.param_dtype bf16
  --actor.gradient_checkpointing_enable
  # the final policy (Hugging Face format), DeepSpeed checkpoints, TensorBoard
  --ckpt.output_dir "$WORK/runs/salsa-ppo"
  --ckpt.path "$WORK/runs/salsa-ppo/ckpt"
  --ckpt.save_steps 50
  --logger.tensorboard_dir "$WORK/runs/salsa-ppo/tb"
)
launch openrlhf_pilaf.cli.train_ppo_ray "${ppo_args[@]}"

# 4. Online DPO with the soup as the DPO reference: --salsa.* replaces --ref.model_name_or_path, and the
# policy starts from the soup (its directory exists since step 2).
POLICY="$SOUP"
dpo_common_args "$SALSA_SAMPLER" "$WORK/runs/salsa-online-$SALSA_SAMPLER" 42
dpo_args=()
skip=0
for arg in "${DPO_COMMON[@]}"; do # every shared flag but the fixed reference
  if ((skip)); then skip=0; continue; fi
  if [[ "$arg" == --ref.model_name_or_path ]]; then skip=1; continue; fi
  dpo_args+=("$arg")
done
launch openrlhf_pilaf.cli.train_dpo_ray "${dpo_args[@]}" \
  --salsa.ingredients "$SFT_A" "$SFT_B" \
  --salsa.weights 0.5 0.5 \
  --salsa.dtype bf16 \
  --salsa.output "$SOUP" \
  --dpo.mode online \
  --train.max_steps 500 \
  --eval.steps 50 \
  --ckpt.save_steps 50
