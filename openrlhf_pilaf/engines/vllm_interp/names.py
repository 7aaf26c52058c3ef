"""Names shared by the plugin entry point, the config, the model and the logits processor.

Import-light on purpose (no vLLM, no torch): the `vllm.general_plugins` entry point imports this in
every vLLM process, and the driver builds engine arguments from it before any engine exists.
"""

# The one architecture name of the interpolated model; `hf_overrides={"architectures": [...]}` selects
# it. The checkpoint's own architecture (LlamaForCausalLM, Qwen2ForCausalLM, ...) travels in
# HF_BASE_ARCHITECTURE and is resolved through vLLM's ModelRegistry inside the engine.
INTERPOLATED_ARCHITECTURE = "PilafInterpolatedForCausalLM"

# architecture name -> lazy "module:Class" target for vLLM's ModelRegistry
ARCHITECTURES: dict[str, str] = {
    INTERPOLATED_ARCHITECTURE: "openrlhf_pilaf.engines.vllm_interp.model:PilafInterpolatedForCausalLM",
}

# Fully qualified name of the logits processor (vLLM's `logits_processors` engine argument). One class
# serves both of vLLM's model runners (V1 and Model Runner V2), see logits_processor.py.
LOGITS_PROCESSOR = "openrlhf_pilaf.engines.vllm_interp.logits_processor:InterpolationLogitsProcessor"

# Per-request interpolation weight: SamplingParams(extra_args={W_KEY: w}).
#   z(w) = (1 + w) * h_policy - w * h_ref;  0 -> policy, -1 -> reference, +-beta -> PILAF's pi_plus / pi_minus
#   (docs/interpolation.md)
W_KEY = "pilaf_w"

# Requests whose KV blocks never serve the reference half (w = 0 in the "policy" / "sampled" modes) may skip
# it: a step whose rows are all such requests runs the policy half only (model.py). With prefix caching on,
# a cached block must not carry a skipped reference KV into a request that reads it, so the front ends give
# those requests their own prefix-cache namespace (`cache_salt=POLICY_ONLY_SALT` on the prompt) and say so
# with SamplingParams(extra_args={POLICY_ONLY_KEY: True}); without that mark, prefix caching keeps both
# halves running.
POLICY_ONLY_KEY = "pilaf_policy_only"
POLICY_ONLY_SALT = "pilaf-policy-only"

# Keys the config writes into `hf_overrides` (they become attributes of the engine's hf_config).
HF_BASE_ARCHITECTURE = "pilaf_base_architecture"
HF_REFERENCE_PATH = "pilaf_reference_path"
HF_DEFAULT_W = "pilaf_default_w"
HF_LOGPROBS = "pilaf_logprobs"

# Sub-module names inside the interpolated model. They prefix every parameter and attention layer
# ("policy.model.layers.0.self_attn.attn"), which is what gives each half its own KV cache.
POLICY = "policy"
REFERENCE = "reference"
