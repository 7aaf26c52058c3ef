"""The nested `args` namespace OpenRLHF's classes read (`strategy.args.ds.zero_stage`, `args.data.input_key`, ...).

OpenRLHF passes its whole parsed command line to DeepspeedStrategy, PromptDataset and the Ray model
actors, which read what they need from it. We hand them the same shape, filled from our validated
configs; the keys we do not expose get OpenRLHF 0.11.2's defaults (those that change nothing here).
"""

from __future__ import annotations

from types import SimpleNamespace

from openrlhf_pilaf.trainer.online_dpo.config import OnlineDPOConfig


def ds_namespace(zero_stage: int, param_dtype: str, attn_implementation: str = "sdpa") -> SimpleNamespace:
    """`args.ds` as DeepspeedStrategy and OpenRLHF's model actors read it; what we do not expose keeps
    OpenRLHF 0.11.2's default (no offload, no tensor or sequence parallelism, no packing, no LoRA)."""
    return SimpleNamespace(
        zero_stage=zero_stage,
        param_dtype=param_dtype,
        attn_implementation=attn_implementation,
        experts_implementation=None,
        adam_offload=False,
        zpg=1,
        use_universal_ckpt=False,
        grad_accum_dtype=None,
        overlap_comm=False,
        deepcompile=False,
        tensor_parallel_size=1,
        ring_attn_size=1,
        load_in_4bit=False,
        packing_samples=False,
        use_liger_kernel=False,
        value_head_prefix="score",
    )


def data_namespace(data) -> SimpleNamespace:
    """`args.data` as OpenRLHF's PromptDataset reads it, from any of our data configs (DPO's, evaluate's)."""
    return SimpleNamespace(
        input_key=data.input_key,
        label_key=data.label_key,
        apply_chat_template=data.apply_chat_template,
        input_template=data.input_template,
        image_key="images",
    )


def openrlhf_args(cfg: OnlineDPOConfig, *, reference_path: str) -> SimpleNamespace:
    ds = ds_namespace(cfg.ds.zero_stage, cfg.ds.param_dtype, cfg.ds.attn_implementation)
    return SimpleNamespace(
        ds=ds,
        data=data_namespace(cfg.data),
        use_ms=False,  # blending_datasets reads it for hub dataset ids (ModelScope instead of the HF hub)
        train=SimpleNamespace(seed=cfg.train.seed, dynamic_batch_enable=False, full_determinism_enable=False),
        actor=SimpleNamespace(model_name_or_path=cfg.actor.model_name_or_path),
        ref=SimpleNamespace(model_name_or_path=reference_path, offload=False),
        reward=SimpleNamespace(
            model_name_or_path=cfg.reward.model_name_or_path,
            normalize_enable=cfg.reward.normalize_enable,
            offload=False,
        ),
        # The reference actor builds its Actor with the rollout temperature; DPO's log-probs are at temperature 1.
        rollout=SimpleNamespace(temperature=1.0),
        logger=SimpleNamespace(
            tensorboard_dir=cfg.logger.tensorboard_dir,
            wandb=SimpleNamespace(
                key=cfg.wandb.key,
                org=cfg.wandb.org,
                group=cfg.wandb.group,
                project=cfg.wandb.project,
                run_name=cfg.wandb.run_name,
            ),
        ),
        local_rank=-1,
    )


def make_strategy(args: SimpleNamespace, cfg: OnlineDPOConfig):
    """OpenRLHF's DeepspeedStrategy for the learner (setup_distributed is the caller's, in its own process)."""
    from openrlhf.utils.deepspeed import DeepspeedStrategy

    return DeepspeedStrategy(
        seed=cfg.train.seed,
        max_norm=cfg.actor.max_norm,
        micro_train_batch_size=cfg.train.micro_batch_size,
        train_batch_size=cfg.train.batch_size,
        zero_stage=cfg.ds.zero_stage,
        args=args,
    )
