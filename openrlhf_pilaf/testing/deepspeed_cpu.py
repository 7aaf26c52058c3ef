"""A single-process OpenRLHF DeepspeedStrategy on DeepSpeed's CPU accelerator (gloo)."""

from __future__ import annotations

import os
from types import SimpleNamespace

from openrlhf_pilaf.utils.cpu_stack import single_process_dist_env


def strategy_args(zero_stage: int = 2, param_dtype: str = "bf16") -> SimpleNamespace:
    """The subset of OpenRLHF's nested CLI namespace that DeepspeedStrategy and the Ray model actors read."""
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import ds_namespace

    ds = ds_namespace(zero_stage, param_dtype)
    return SimpleNamespace(
        ds=ds,
        train=SimpleNamespace(dynamic_batch_enable=False),
        ref=SimpleNamespace(offload=False),
        rollout=SimpleNamespace(temperature=1.0),
        local_rank=-1,
    )


def make_cpu_strategy(batch_size: int, zero_stage: int = 2, seed: int = 0):
    """Set the world-of-one variables (if unset) and start OpenRLHF's strategy on them."""
    from openrlhf.utils.deepspeed import DeepspeedStrategy

    for key, value in single_process_dist_env().items():
        os.environ.setdefault(key, value)
    strategy = DeepspeedStrategy(
        seed=seed,
        max_norm=1.0,
        micro_train_batch_size=batch_size,
        train_batch_size=batch_size,
        zero_stage=zero_stage,
        args=strategy_args(zero_stage),
    )
    strategy.setup_distributed()
    return strategy


def adam_config(lr: float, steps: int) -> dict:
    """The optimizer/scheduler dict `DeepspeedStrategy.prepare((model, cfg))` takes."""
    return dict(
        optim="adam",
        adam=dict(lr=lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0),
        lr_scheduler="constant",
        lr_warmup_ratio=0.0,
        max_norm=1.0,
        scheduler_steps=steps,
    )


def end_world() -> None:
    """Destroy this process's torch.distributed world and DeepSpeed's cached clones of its groups, so that a later
    world in the same process (the next test) starts clean: DeepSpeed keeps its clone of the world group in
    module globals and would hand the destroyed one to the next engine ("group is not registered")."""
    import torch.distributed as dist
    from deepspeed.utils import groups

    if dist.is_initialized():
        dist.destroy_process_group()
    for name in ("_WORLD_GROUP", "_DATA_PARALLEL_GROUP"):
        if hasattr(groups, name):
            setattr(groups, name, None)
