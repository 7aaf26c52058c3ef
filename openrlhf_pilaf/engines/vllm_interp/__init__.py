"""Interpolated decoding inside vLLM: policy and reference as two sub-models of one engine.

Every request is sampled from logits(w) = (1 + w) * h_policy - w * h_ref with its own w, so one
batch mixes vanilla (w = 0), PILAF's pi_plus / pi_minus (w = +beta / -beta) and reference (w = -1)
rows; both models keep their own KV cache. Inside OpenRLHF's Ray rollout actors:

    from openrlhf_pilaf.engines.vllm_interp import InterpolatedEngineConfig, W_KEY
    from openrlhf_pilaf.engines.vllm_interp.launch import create_interpolated_vllm_engines

    cfg = InterpolatedEngineConfig(reference_path=sft_dir, logprobs="policy")
    engines = create_interpolated_vllm_engines(cfg, pretrain=policy_dir, num_engines=2, tensor_parallel_size=1, ...)
    SamplingParams(..., extra_args={W_KEY: 0.1})        # W_KEY == "pilaf_w"

Pieces (one job each):
- names.py: architecture name, extra_args key, hf_overrides keys (import-light; the plugin reads it).
- plugin.py: the `vllm.general_plugins` entry point registering `PilafInterpolatedForCausalLM`.
- config.py: `InterpolatedEngineConfig` -> `engine_kwargs` (hf_overrides, logits processor, logprobs_mode).
- semantics.py: what returned log-probs mean ("policy" | "sampled" | "reference") and a request's w.
  (The engine-neutral rules, valid w, vocabulary layout, same network and tokenizer, are engines/rules.py.)
- model.py: the two-half vLLM model, generic over vLLM's decoder architectures (via ModelRegistry).
- handoff.py: the checked hand-off of h_policy - h_ref from compute_logits to the logits processor.
- logits_processor.py: per-request w, for vLLM's V1 model runner and for Model Runner V2.
- fingerprint.py: weight fingerprints per half (the float64 oracle tests check against is testing/exact.py).
- rollout_actors.py / worker.py: OpenRLHF's vLLM rollout actors on the CPU stack and our worker extension
  (weight sync, fingerprints); launch.py starts interpolated engines through them.
- generation.py: the generation interface over an offline `vllm.LLM` or the Ray rollout actors.

Weight sync: every weight OpenRLHF broadcasts lands in the policy half (the model routes
`load_weights` there and names it as the target of in-place reloads); the reference is read once
from its own checkpoint at engine start. After a sync, call the engine's `reset_prefix_cache` (as
OpenRLHF's PPO trainer does) when prefix caching is on.

GPU: vLLM >= 0.32 picks Model Runner V2 on GPUs with Triton, V1 otherwise (and on CPU). OpenRLHF's
actors cannot set the engine's environment, so the one logits-processor class implements both
interfaces; the V2 path is unit-tested against vLLM's interface objects but has not run on a GPU
here. To force V1 on a GPU, set VLLM_USE_V2_MODEL_RUNNER=0 in the environment of the Ray workers
(exported before `ray start` / `ray.init`, or through Ray's runtime_env).

Not supported (refused at start-up): pipeline parallelism, speculative decoding, LoRA, prompt
embeddings, multimodal / hybrid / attention-free architectures, loaders other than vLLM's default.
Tensor parallelism should work (both halves shard alike) but is untested. Each token costs twice the
KV-cache memory of a plain engine.
"""

from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
from openrlhf_pilaf.engines.vllm_interp.names import INTERPOLATED_ARCHITECTURE, W_KEY

__all__ = ["INTERPOLATED_ARCHITECTURE", "W_KEY", "InterpolatedEngineConfig"]
