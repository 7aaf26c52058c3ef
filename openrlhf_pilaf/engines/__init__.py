"""Generation engines behind one interface (interface.py): plans in, samples with explicit log-probs out.

- torch_engine.py: `TorchInterpolatedEngine`, two HF models decoding in lockstep with KV caches (any device).
- scoring.py: teacher-forced log-probs for what an engine does not return; kl.py: the evaluation's KL estimator.
- weight_sync.py: OpenRLHF-protocol weight sync into vLLM engines (CPU and GPU).
- vllm_interp/: everything vLLM, one floor above (it uses the rules and the interface; nothing here imports it):
  the interpolated model, logits processor, config and plugin, OpenRLHF's rollout actors and our worker
  extension, the launcher, and generation.py, the interface over an offline `vllm.LLM` or OpenRLHF's Ray rollout
  actors (the DPO driver's front end), the only module that hands a w to vLLM.
"""
