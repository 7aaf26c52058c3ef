"""The DPO launcher's parts around the driver (`trainer.dpo`), for online and iterative DPO alike.

Pieces, in data-flow order: config (the launcher's flags), pair_batches and the learners (learner:
DeepSpeed; torch_learner: plain PyTorch), ray_actors and runtime_ray / runtime_torch (what runs where),
evaluation (reward, KL, J), sinks (metrics), run (assembling a run from a config). The prompts, the
samplers, the oracle and the driver have their own modules and packages. The launcher is `cli/train_dpo_ray.py`.
"""
