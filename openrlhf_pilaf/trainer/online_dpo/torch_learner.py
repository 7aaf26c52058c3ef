"""`TorchDPOLearner`: the DPO learner without DeepSpeed, for `--engine torch` where DeepSpeed is not installed.

Plain PyTorch: the Hugging Face model, AdamW, gradient accumulation over `--train.batch_size` pairs in
micro-batches of `--train.micro_batch_size`, clipping at `--actor.max_norm`, transformers' scheduler.
Same interface as the DeepSpeed `DPOLearner`, so the loop cannot tell them apart, and the same loss:
OpenRLHF's `DPOLoss` needs `openrlhf.models`, which imports DeepSpeed, so `dpo_loss` below computes
the same function (a test holds the two equal).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from openrlhf_pilaf.pairs.log import TrainingPair
from openrlhf_pilaf.trainer.online_dpo.config import ActorAdamConfig, ActorConfig, DPOConfig
from openrlhf_pilaf.trainer.online_dpo.pair_batches import StepSums, pair_batches
from openrlhf_pilaf.utils.sequences import position_ids

logger = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def dpo_loss(
    policy_chosen, policy_rejected, ref_chosen, ref_rejected, *, beta: float, label_smoothing: float, ipo: bool
):
    """(loss, chosen_rewards, rejected_rewards) of DPO (Rafailov et al. 2023, eq. 7), its conservative variant
    with label smoothing (Mitchell 2023) or IPO (Azar et al. 2023, eq. 17): what OpenRLHF's DPOLoss computes."""
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if ipo:
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    chosen = beta * (policy_chosen - ref_chosen).detach()
    rejected = beta * (policy_rejected - ref_rejected).detach()
    return losses.mean(), chosen, rejected


class TorchDPOLearner:
    def __init__(
        self,
        pretrain: str,
        *,
        dpo: DPOConfig,
        actor: ActorConfig,
        adam: ActorAdamConfig,
        param_dtype: str,
        micro_batch_size: int,
        batch_size: int,
        optimizer_steps: int,
        pad_token_id: int,
        device: str | torch.device,
    ) -> None:
        from transformers import AutoModelForCausalLM, get_scheduler

        self.model = AutoModelForCausalLM.from_pretrained(pretrain, dtype=_DTYPES[param_dtype]).to(device)
        if actor.gradient_checkpointing_enable:
            self.model.gradient_checkpointing_enable()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=adam.lr, betas=tuple(adam.betas), eps=adam.eps, weight_decay=adam.weight_decay
        )
        steps = max(1, optimizer_steps)
        self.scheduler = get_scheduler(
            actor.lr_scheduler,
            self.optimizer,
            num_warmup_steps=int(steps * actor.lr_warmup_ratio),
            num_training_steps=steps,
        )
        self.dpo, self.max_norm = dpo, actor.max_norm
        self.micro, self.accumulate = micro_batch_size, batch_size // micro_batch_size
        self.pad_token_id = pad_token_id
        self._micro_steps = 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hf_model(self) -> torch.nn.Module:
        return self.model

    def _sequence_logps(self, ids, attention, action) -> torch.Tensor:
        ids, attention, action = ids.to(self.device), attention.to(self.device), action.to(self.device)
        logits = self.model(input_ids=ids, attention_mask=attention, position_ids=position_ids(attention)).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (lp * action).sum(-1)

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]:
        self.model.train()
        stats = StepSums()
        for b in pair_batches(pairs, self.micro, self.pad_token_id):
            logps = self._sequence_logps(b.input_ids, b.attention_mask, b.action_mask)
            ref = b.ref_logps.to(device=logps.device, dtype=logps.dtype)
            loss, chosen, rejected = dpo_loss(
                logps[: b.n],
                logps[b.n :],
                ref[: b.n],
                ref[b.n :],
                beta=self.dpo.beta,
                label_smoothing=self.dpo.label_smoothing,
                ipo=self.dpo.loss == "ipo",
            )
            (loss / self.accumulate).backward()
            self._micro_steps += 1
            if self._micro_steps % self.accumulate == 0:  # one optimizer step per --train.batch_size pairs
                if self.max_norm > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
            stats.add(loss, chosen, rejected, b.n)
        return stats.sums

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in self.model.named_parameters():
            yield name, p.data.detach()

    def save_checkpoint(self, ckpt_dir: str, tag: str, max_num: int, client_state: dict) -> None:
        path = Path(ckpt_dir) / tag
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "micro_steps": self._micro_steps,
            "client_state": client_state,
        }
        tmp = path / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "state.pt")
        kept = sorted(
            (p for p in Path(ckpt_dir).iterdir() if p.is_dir() and (p / "state.pt").exists()),
            key=lambda p: p.stat().st_mtime,
        )
        for old in kept[:-max_num]:
            if old.name != tag:
                import shutil

                shutil.rmtree(old)

    def load_checkpoint(self, ckpt_dir: str, tag: str) -> dict:
        path = Path(ckpt_dir) / tag / "state.pt"
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint {tag!r} under {ckpt_dir} (--ckpt.path)")
        state = torch.load(path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._micro_steps = state["micro_steps"]
        return state["client_state"]

    def save_model(self, tokenizer, output_dir: str) -> None:
        self.model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
