"""Online DPO: every step generates pairs with the chosen sampler, labels them, and trains on exactly them.

Pieces, in data-flow order: config (the launcher's flags), prompts (OpenRLHF's datasets, resumable order),
pair_generator (OpenRLHF's SamplesGenerator with a w per request), the samplers and the oracle (their own
packages), pair_batches and the learners (learner: DeepSpeed; torch_learner: plain PyTorch), ray_actors and
runtime_ray / runtime_torch (what runs where), loop (one step, checkpoints, resume), evaluation (reward,
KL, J), sinks (metrics), run (assembling a run from a config). The launcher is `cli/train_dpo_ray.py`.
"""
