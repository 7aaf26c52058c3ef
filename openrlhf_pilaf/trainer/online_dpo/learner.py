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
from openrlhf_pilaf.trainer.online_dpo.pair_batches import StepSums, pair_batches


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

    @torch.no_grad()
    def action_logprobs(
        self, sequences: torch.Tensor, action_mask: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The policy's log-probs of the action tokens, by the Actor call OpenRLHF's ReferenceModelActor.forward
        makes (eval mode, returned on the CPU in the model's dtype): log pi and log pi_ref of one response then
        come from the same numerics (docs/interpolation.md, "The evaluation KL")."""
        dev = self.device
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(
                sequences.to(dev),
                action_mask.to(dev),
                attention_mask.to(dev),
                ring_attn_group=self.strategy.ring_attn_group,
            )
        finally:
            self.model.train(was_training)
        return out.to("cpu")

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]:
        """One pass over `pairs` (this rank's shard), micro-batch by micro-batch; returns summed statistics."""
        self.model.train()
        stats = StepSums()
        for b in pair_batches(pairs, self.strategy.micro_train_batch_size, self.pad_token_id):
            logps = self._sequence_logps(b.input_ids, b.attention_mask, b.action_mask)
            ref = b.ref_logps.to(device=logps.device, dtype=logps.dtype)
            loss, chosen, rejected = self.loss_fn(logps[: b.n], logps[b.n :], ref[: b.n], ref[b.n :])
            self.strategy.backward(loss, self.model, self.optimizer)
            self.strategy.optimizer_step(self.optimizer, self.model, self.scheduler)
            stats.add(loss, chosen, rejected, b.n)
        return stats.sums

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

    def weights_sha256(self) -> str:
        """SHA-256 over every parameter (name, dtype, shape, bytes): to check that a checkpoint load restored
        exactly the weights saved (every rank must call it under ZeRO-3, as for a sync)."""
        from openrlhf_pilaf.utils.tensor_hash import tensors_sha256

        return tensors_sha256(self.named_weights())[0]

    def save_checkpoint(self, ckpt_dir: str, tag: str, max_num: int, client_state: dict) -> None:
        self.strategy.save_ckpt(self.model.model, ckpt_dir, tag=tag, max_num=max_num, client_state=client_state)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> dict:
        path, states = self.strategy.load_ckpt(self.model.model, ckpt_dir, tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {ckpt_dir} (--ckpt.path)")
        return states

    def save_model(self, tokenizer, output_dir: str) -> None:
        self.strategy.save_model(self.model, tokenizer, output_dir)
