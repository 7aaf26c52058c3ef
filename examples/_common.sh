# Shared by every recipe in examples/: sourced (`source "$(dirname "$0")/_common.sh"`), never run itself.
#
# It holds what the recipes have in common, so that each flag is explained in exactly one place:
# the paths (all overridable from the environment), the `run` wrapper every launch goes through, the
# SFT command of OpenRLHF, and the flags every online / iterative DPO launch shares.

# ------------------------------------------------------------------------------------------- paths
# Everything a recipe writes goes under $WORK (absolute, so `ray job submit` entrypoints, which start
# in a temporary directory on the head node, find the same files).
WORK="${WORK:-$PWD/pilaf-work}"
# Prompts prepared by examples/prepare_data.sh from Anthropic/hh-rlhf (prompts_train.jsonl,
# prompts_test.jsonl, sft_train.jsonl, chat_template.jinja).
DATA_DIR="${DATA_DIR:-$WORK/data/hh_rlhf}"
# The base model the paper fine-tunes (SFT on HH-RLHF, then DPO). Gated on the hub: accept its licence first.
BASE="${BASE:-meta-llama/Llama-3.1-8B}"
# The SFT policy every DPO run starts from, and its DPO reference: the output of examples/sft_hh.sh.
# Any Llama-3.1 SFT checkpoint will do, but it must have the oracle's tokenizer (the launcher compares
# them and refuses a mismatch; Llama-3 (3.0) checkpoints such as OpenRLHF/Llama-3-8b-sft-mixture
# name the reserved special tokens differently and are refused against this Llama-3.1 oracle).
POLICY="${POLICY:-$WORK/sft/llama3.1-8b-hh}"
REF="${REF:-$POLICY}"
# The preference oracle standing in for people (the paper's): a Bradley-Terry reward model.
RM="${RM:-Skywork/Skywork-Reward-Llama-3.1-8B}"
# python of the environment where openrlhf-pilaf is installed (on every node of a Ray cluster).
PYTHON="${PYTHON:-python}"

# ----------------------------------------------------------------------------------------- cluster
# Nodes and GPUs per node of the cluster; NODES > 1 needs a running Ray cluster (see README.md).
NODES="${NODES:-1}"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"

# The samplers the DPO recipes accept (those of openrlhf_pilaf.samplers; tests/test_recipes.py checks
# that this list and the package's registry agree).
PILAF_SAMPLERS=(vanilla best_of_n hybrid pilaf)

# ------------------------------------------------------------------------------------- the wrapper
# run CMD ARGS...: run one command, echoed first. With PILAF_DRY_RUN=1 (tests/test_recipes.py) the
# command is not run: its argv is appended to $PILAF_DRY_RUN_FILE as NUL-separated fields, the argument
# count first, so the test can feed it to the launcher's own parser. A real user never sets these.
run() {
  if [[ "${PILAF_DRY_RUN:-0}" == 1 ]]; then
    : "${PILAF_DRY_RUN_FILE:?PILAF_DRY_RUN=1 needs PILAF_DRY_RUN_FILE}"
    printf '%s\0' "$#" "$@" >>"$PILAF_DRY_RUN_FILE"
    return 0
  fi
  printf '+' >&2
  printf ' %q' "$@" >&2
  printf '\n' >&2
  "$@"
}

# launch MODULE ARGS...: `python -m MODULE ARGS...`, on this machine, or submitted to a Ray cluster's
# head with `ray job submit` when RAY_JOB_ADDRESS (the dashboard, e.g. http://HEAD:8265) is set.
launch() {
  if [[ -n "${RAY_JOB_ADDRESS:-}" ]]; then
    run ray job submit --address "$RAY_JOB_ADDRESS" -- "$PYTHON" -m "$@"
  else
    run "$PYTHON" -m "$@"
  fi
}

# require_sampler NAME: refuse a sampler the DPO launcher does not have, before anything starts.
require_sampler() {
  local s
  for s in "${PILAF_SAMPLERS[@]}"; do
    [[ "$1" == "$s" ]] && return 0
  done
  echo "error: unknown sampler '${1:-}'; choose one of: ${PILAF_SAMPLERS[*]}" >&2
  exit 2
}

# require_cluster: several nodes need a Ray cluster to connect to (the launcher would otherwise start a
# one-node Ray and refuse the layout, naming the flags).
require_cluster() {
  if ((NODES > 1)) && [[ -z "${RAY_ADDRESS:-}" && -z "${RAY_JOB_ADDRESS:-}" ]]; then
    echo "error: NODES=$NODES needs a Ray cluster: 'ray start --head' on one node, 'ray start --address HEAD:6379'" \
      "on the others, then RAY_ADDRESS=auto (run here, on the head) or RAY_JOB_ADDRESS=http://HEAD:8265" >&2
    exit 2
  fi
}

# ------------------------------------------------------------------------------------------- SFT
# run_sft OUT SEED EPOCHS: OpenRLHF's SFT of $BASE on the chosen HH-RLHF dialogues, on one node.
run_sft() {
  local out="$1" seed="$2" epochs="$3"
  local sft_args=(
    # the model to fine-tune
    --model.model_name_or_path "$BASE"
    # whole dialogues as chat messages: the last (assistant) message is the response, the rest the prompt
    --data.dataset "$DATA_DIR/sft_train.jsonl"
    --data.input_key messages
    --data.apply_chat_template
    # the oracle's (Llama-3.1) chat template, saved with the SFT tokenizer: policy and oracle read one format
    --data.tokenizer_chat_template "$(<"$DATA_DIR/chat_template.jinja")"
    # prompt + response tokens at most (longer dialogues are truncated)
    --data.max_len 2048
    # dialogues per optimizer step (global), and per GPU per forward pass
    --train.batch_size 128
    --train.micro_batch_size 4
    # passes over the data: 1 for the paper's main runs, more for the over-fitted start
    --train.max_epochs "$epochs"
    # seed of data order and initialisation: SALSA averages two runs that differ only in it
    --train.seed "$seed"
    # AdamW learning rate (cosine schedule with 3% warm-up: OpenRLHF's defaults)
    --adam.lr 5e-6
    # DeepSpeed ZeRO-3 shards weights, gradients and optimizer state over the GPUs; bf16 weights
    --ds.zero_stage 3
    --ds.param_dtype bf16
    # recompute activations in the backward pass, so an 8B model at 2048 tokens fits
    --model.gradient_checkpointing_enable
    # where the Hugging Face checkpoint (and its tokenizer) is written at the end
    --ckpt.output_dir "$out"
    # log the loss every 10 steps, to TensorBoard
    --logger.logging_steps 10
    --logger.tensorboard_dir "$out/tb"
  )
  # deepspeed's launcher starts one rank per GPU of this node and hands each its --local_rank; the
  # module is OpenRLHF's own SFT entry point, unchanged.
  run deepspeed --num_gpus "$GPUS_PER_NODE" --module openrlhf.cli.train_sft "${sft_args[@]}"
}

# ------------------------------------------------------------------------------- online / iterative DPO
# dpo_common_args SAMPLER RUN_DIR SEED: fills the array DPO_COMMON with the flags every DPO recipe shares.
dpo_common_args() {
  local sampler="$1" run_dir="$2" seed="$3"
  # The GPU layout. One node: 4 learner ranks, 1 reference, 1 reward model, 2 rollout engines = 8 GPUs.
  # Several nodes: the learner takes NODES-1 whole nodes; the last holds the reference, the reward model
  # and GPUS_PER_NODE-2 rollout engines. --train.batch_size must stay a multiple of the learner ranks.
  local actor_nodes actor_gpus engines
  if ((NODES == 1)); then
    actor_nodes=1 actor_gpus=$((GPUS_PER_NODE / 2)) engines=$((GPUS_PER_NODE / 2 - 2))
  else
    actor_nodes=$((NODES - 1)) actor_gpus=$GPUS_PER_NODE engines=$((GPUS_PER_NODE - 2))
  fi
  ACTOR_NODES="${ACTOR_NODES:-$actor_nodes}"
  ACTOR_GPUS="${ACTOR_GPUS:-$actor_gpus}"
  VLLM_ENGINES="${VLLM_ENGINES:-$engines}"
  DPO_COMMON=(
    # vLLM rollout engines (interpolated decoding) + DeepSpeed learners on Ray
    --engine vllm
    # the SFT policy the run starts from, and the frozen DPO reference (the same SFT checkpoint)
    --actor.model_name_or_path "$POLICY"
    --ref.model_name_or_path "$REF"
    # the preference oracle: the reward model scores both responses, a Bradley-Terry draw labels the pair
    --reward.model_name_or_path "$RM"
    --oracle.labels bt
    # HH-RLHF prompts (chat messages under "prompt"), formatted with the policy's chat template
    --data.prompt_dataset "$DATA_DIR/prompts_train.jsonl"
    --data.input_key prompt
    --data.apply_chat_template
    # prompt + response tokens at most, and response tokens at most
    --data.max_len 2048
    --rollout.max_new_tokens 512
    # the pair sampler being compared, and the DPO beta (the paper's 0.1; PILAF's w defaults to it)
    --pilaf.sampler "$sampler"
    --dpo.beta 0.1
    # prompts (= preference pairs) per rollout, pairs per optimizer step, pairs per rank per forward
    --rollout.batch_size 64
    --train.batch_size 64
    --train.micro_batch_size 2
    # DPO learning rate (constant, as in the paper's online DPO)
    --actor.adam.lr 5e-7
    # seed of prompt order, sampler coins, labels and initialisation
    --train.seed "$seed"
    # where the ranks go (see the layout above); one GPU per rollout engine
    --actor.num_nodes "$ACTOR_NODES"
    --actor.num_gpus_per_node "$ACTOR_GPUS"
    --ref.num_nodes 1
    --ref.num_gpus_per_node 1
    --reward.num_nodes 1
    --reward.num_gpus_per_node 1
    --vllm.num_engines "$VLLM_ENGINES"
    --vllm.tensor_parallel_size 1
    --vllm.gpu_memory_utilization 0.9
    # ZeRO-3 learners in bf16 with activation recomputation (an 8B policy on 4 GPUs)
    --ds.zero_stage 3
    --ds.param_dtype bf16
    --ds.attn_implementation flash_attention_2
    --actor.gradient_checkpointing_enable
    # held-out HH-RLHF prompts for the oracle reward, KL to the reference and J = reward - beta * KL
    --eval.dataset "$DATA_DIR/prompts_test.jsonl"
    --eval.max_samples 512
    # the run directory (pairs.jsonl, metrics.jsonl, eval.jsonl, final/), and TensorBoard under it
    --ckpt.output_dir "$run_dir"
    --logger.tensorboard_dir "$run_dir/tb"
    --logger.wandb.run_name "$(basename "$run_dir")"
  )
  # The sampler's own setting, spelled out (the launcher refuses a setting another sampler does not read)
  case "$sampler" in
    # best-of-N: the best and worst of 8 policy samples by the DPO implicit reward
    best_of_n) DPO_COMMON+=(--pilaf.n 8) ;;
    # PILAF: a vanilla pair with probability 0.5, else pi_plus vs pi_minus
    pilaf) DPO_COMMON+=(--pilaf.mix_prob 0.5) ;;
  esac
}
