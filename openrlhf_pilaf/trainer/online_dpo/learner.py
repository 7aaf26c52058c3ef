"""`DPOLearner`: OpenRLHF's Actor under its DeepspeedStrategy, trained with its DPOLoss on exactly the pairs given.

Pairs stay together: each micro-batch holds `--train.micro_batch_size` whole pairs, their chosen and
rejected sequences in one left-padded forward, and data-parallel sharding (done by the caller) splits
lists of pairs, never sequences. DeepSpeed accumulates gradients over micro-batches and steps the
optimizer every `--train.batch_size` pairs (global), so one online step of `--rollout.batch_size`
pairs makes rollout.batch_size / train.batch_size optimizer steps on its own pairs only.

Log-probs are at temperature 1 (the Actor is built with temperature 1 whatever the rollout used): the
DPO loss and the implicit reward beta * log(pi / pi_ref) are about the policy itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from openrlhf_pilaf.pairs.log import TrainingPair
from openrlhf_pilaf.trainer.online_dpo.config import ActorAdamConfig, ActorConfig, DPOConfig
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask


def optimizer_config(actor: ActorConfig, adam: ActorAdamConfig, optimizer_steps: int) -> dict:
    """The dict OpenRLHF's `DeepspeedStrategy.prepare((model, cfg))` builds AdamW and its scheduler from."""
    return dict(
        optim="adam",
        adam=dict(lr=adam.lr, betas=tuple(adam.betas), eps=adam.eps, weight_decay=adam.weight_decay),
        lr_scheduler=actor.lr_scheduler,
        lr_warmup_ratio=actor.lr_warmup_ratio,
        max_norm=actor.max_norm,
        scheduler_steps=max(1, optimizer_steps),
    )


class DPOLearner:
    def __init__(
        self,
        strategy,
        pretrain: str,
        *,
        dpo: DPOConfig,
        actor: ActorConfig,
        adam: ActorAdamConfig,
        optimizer_steps: int,
        pad_token_id: int,
    ) -> None:
        from openrlhf.models import Actor
        from openrlhf.models.loss import DPOLoss

        args = strategy.args
        self.strategy = strategy
        self.pad_token_id = pad_token_id
        model = Actor(
            pretrain,
            attn_implementation=args.ds.attn_implementation,
            param_dtype=args.ds.param_dtype,
            ds_config=strategy.get_ds_train_config(),
            temperature=1.0,
        )
        if actor.gradient_checkpointing_enable:
            model.gradient_checkpointing_enable()
        self.model, self.optimizer, self.scheduler = strategy.prepare(
            (model, optimizer_config(actor, adam, optimizer_steps))
        )
        self.loss_fn = DPOLoss(dpo.beta, label_smoothing=dpo.label_smoothing, ipo=dpo.loss == "ipo")
        self.optimizer_steps_done = 0

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def hf_model(self) -> torch.nn.Module:
        """The Hugging Face model inside the Actor and its DeepSpeed engine."""
        inner = self.model.model
        return getattr(inner, "module", inner)

    def _sequence_logps(self, ids, attention, action) -> torch.Tensor:
        dev = self.device
        return self.model(ids.to(dev), action_mask=action.to(dev), attention_mask=attention.to(dev)).sum(-1)

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]:
        """One pass over `pairs` (this rank's shard), micro-batch by micro-batch; returns summed statistics."""
        if not pairs:
            raise ValueError("DPOLearner.train got no pairs")
        self.model.train()
        micro = self.strategy.micro_train_batch_size
        sums = {"loss": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0, "accuracy": 0.0, "pairs": 0.0}
        for start in range(0, len(pairs), micro):
            chunk = pairs[start : start + micro]
            n = len(chunk)
            prompts = [list(p.prompt_ids) for p in chunk]
            seqs = [pr + list(p.chosen_ids) for pr, p in zip(prompts, chunk, strict=True)] + [
                pr + list(p.rejected_ids) for pr, p in zip(prompts, chunk, strict=True)
            ]
            ids, attention, action = left_pad_with_action_mask(seqs, [len(pr) for pr in prompts] * 2, self.pad_token_id)
            logps = self._sequence_logps(ids, attention, action)
            ref = torch.tensor(
                [p.ref_logp_chosen for p in chunk] + [p.ref_logp_rejected for p in chunk],
                dtype=logps.dtype,
                device=logps.device,
            )
            loss, chosen_reward, rejected_reward = self.loss_fn(logps[:n], logps[n:], ref[:n], ref[n:])
            self.strategy.backward(loss, self.model, self.optimizer)
            self.strategy.optimizer_step(self.optimizer, self.model, self.scheduler)
            sums["loss"] += loss.item() * n
            sums["chosen_reward"] += float(chosen_reward.sum())
            sums["rejected_reward"] += float(rejected_reward.sum())
            sums["accuracy"] += float((chosen_reward > rejected_reward).float().sum())
            sums["pairs"] += n
        return sums

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(HF name, full tensor) of every parameter, gathered under ZeRO-3, for a weight sync."""
        params = list(self.hf_model.named_parameters())
        if self.strategy.args.ds.zero_stage == 3:
            import deepspeed

            for name, p in params:
                with deepspeed.zero.GatheredParameters([p]):
                    yield name, p.data.detach().clone()
        else:
            for name, p in params:
                yield name, p.data.detach()

    def save_checkpoint(self, ckpt_dir: str, tag: str, max_num: int, client_state: dict) -> None:
        self.strategy.save_ckpt(self.model.model, ckpt_dir, tag=tag, max_num=max_num, client_state=client_state)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> dict:
        path, states = self.strategy.load_ckpt(self.model.model, ckpt_dir, tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {ckpt_dir} (--ckpt.path)")
        return states

    def save_model(self, tokenizer, output_dir: str) -> None:
        self.strategy.save_model(self.model, tokenizer, output_dir)
