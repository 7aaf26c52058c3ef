"""`--engine torch`: the whole online DPO loop in one process, without Ray or vLLM.

The PyTorch interpolated engine (policy + reference, both Hugging Face models) generates; one
DPOLearner (OpenRLHF's Actor under a world-of-one DeepspeedStrategy) trains; the weight sync is a
checked copy into the engine's policy (`TorchInterpolatedEngine.update_policy`). For machines without
Ray (the lent GPU machine has none) and for fast experiments.
"""

from __future__ import annotations

import logging
import os

import torch

from openrlhf_pilaf.trainer.online_dpo.config import OnlineDPOConfig
from openrlhf_pilaf.trainer.online_dpo.learner import DPOLearner

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class LocalLearner:
    """The loop's Learner: a DPOLearner in this process, syncing into the PyTorch engine."""

    def __init__(self, learner: DPOLearner, engine, tokenizer, ckpt_dir: str, max_num: int) -> None:
        self.learner, self.engine, self.tokenizer = learner, engine, tokenizer
        self.ckpt_dir, self.max_num = ckpt_dir, max_num

    def train(self, pairs):
        return self.learner.train(pairs)

    def sync_weights(self) -> None:
        self.engine.update_policy(self.learner.named_weights())

    def weights_sha256(self) -> str:
        return self.learner.weights_sha256()

    def save_checkpoint(self, tag: str, client_state: dict) -> None:
        self.learner.save_checkpoint(self.ckpt_dir, tag, self.max_num, client_state)

    def load_checkpoint(self, tag: str) -> None:
        self.learner.load_checkpoint(self.ckpt_dir, tag)

    def save_model(self, output_dir: str) -> None:
        self.learner.save_model(self.tokenizer, output_dir)


def start_world_of_one() -> None:
    """torch.distributed variables for the single learner rank (a fresh loopback port), unless already started."""
    import torch.distributed as dist

    from openrlhf_pilaf.utils.cpu_stack import single_process_dist_env

    if not dist.is_initialized():
        os.environ.update(single_process_dist_env())


def deepspeed_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def build_torch_parts(cfg: OnlineDPOConfig, args, *, reference_path: str, tokenizer, optimizer_steps: int):
    """(learner, engine) for one process: DeepSpeed's learner where DeepSpeed is installed, plain PyTorch
    otherwise; the engine on the learner's device, in the learner's dtype, starting from its exact weights."""
    from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine

    if deepspeed_available():
        from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import make_strategy

        start_world_of_one()
        strategy = make_strategy(args, cfg)
        strategy.setup_distributed()
        learner = DPOLearner(
            strategy,
            cfg.actor.model_name_or_path,
            dpo=cfg.dpo,
            actor=cfg.actor,
            adam=cfg.adam,
            optimizer_steps=optimizer_steps,
            pad_token_id=tokenizer.pad_token_id,
        )
    else:
        from openrlhf_pilaf.trainer.online_dpo.torch_learner import TorchDPOLearner

        logger.info("DeepSpeed is not installed: training with plain PyTorch AdamW (--engine torch)")
        learner = TorchDPOLearner(
            cfg.actor.model_name_or_path,
            dpo=cfg.dpo,
            actor=cfg.actor,
            adam=cfg.adam,
            param_dtype=cfg.ds.param_dtype,
            micro_batch_size=cfg.train.micro_batch_size,
            batch_size=cfg.train.batch_size,
            optimizer_steps=optimizer_steps,
            pad_token_id=tokenizer.pad_token_id,
            device="cuda" if torch.cuda.is_available() else "cpu",
        )
    engine = TorchInterpolatedEngine.from_pretrained(
        cfg.actor.model_name_or_path,
        reference_path,
        device=learner.device,
        dtype=_DTYPES[cfg.ds.param_dtype],
        max_batch_size=64,
    )
    engine.update_policy(learner.named_weights())  # the same start as the learner, bit for bit
    local = LocalLearner(learner, engine, tokenizer, cfg.ckpt.checkpoint_dir, cfg.ckpt.max_num)
    return local, engine
