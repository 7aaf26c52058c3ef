"""Generation engines behind one interface (interface.py): plans in, samples with explicit log-probs out.

- torch_engine.py: `TorchInterpolatedEngine`, two HF models decoding in lockstep with KV caches (any device).
- vllm_interp/: the interpolated vLLM model, logits processor, config and launcher for OpenRLHF's rollout actors.
- vllm_generation.py: the interface over an offline `vllm.LLM` or OpenRLHF's Ray rollout actors (the DPO
  driver's front end); the only module that hands a w to vLLM.
- scoring.py: teacher-forced log-probs for what an engine does not return.
- vllm_worker.py / weight_sync.py: OpenRLHF-protocol weight sync into vLLM (CPU and GPU).
"""
