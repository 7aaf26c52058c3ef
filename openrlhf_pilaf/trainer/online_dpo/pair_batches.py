"""Micro-batches of whole pairs, and the step statistics both DPO learners return.

A micro-batch holds whole pairs: its chosen sequences, then its rejected ones, left-padded into one
forward (OpenRLHF's DPO trainer does the same "concatenated forward"), so a pair is never split across
micro-batches or ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from openrlhf_pilaf.pairs.log import TrainingPair
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask


@dataclass(frozen=True)
class PairBatch:
    n: int  # pairs; rows 0..n-1 are the chosen responses, n..2n-1 the rejected ones
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    # [2n] log pi_ref of each response, summed (from sampling time). One quantity for every row whichever computation
    # gave it: on the PyTorch engine the decode's (w != 0) or one teacher-forced reference forward's (w = 0), equal to
    # float32 noise (GeneratedSample.reference_logprobs_from; engines/torch_engine.py states the bound).
    ref_logps: torch.Tensor


def pair_batches(pairs: Sequence[TrainingPair], micro_batch_size: int, pad_token_id: int) -> Iterator[PairBatch]:
    if not pairs:
        raise ValueError("a DPO step needs at least one pair")
    for start in range(0, len(pairs), micro_batch_size):
        chunk = pairs[start : start + micro_batch_size]
        prompts = [list(p.prompt_ids) for p in chunk]
        seqs = [pr + list(p.chosen_ids) for pr, p in zip(prompts, chunk, strict=True)] + [
            pr + list(p.rejected_ids) for pr, p in zip(prompts, chunk, strict=True)
        ]
        ids, attention, action = left_pad_with_action_mask(seqs, [len(pr) for pr in prompts] * 2, pad_token_id)
        ref = torch.tensor([p.ref_logp_chosen for p in chunk] + [p.ref_logp_rejected for p in chunk])
        yield PairBatch(len(chunk), ids, attention, action, ref)


class StepSums:
    """Sums over a step's pairs: loss, implicit rewards of chosen and rejected, and their accuracy."""

    def __init__(self) -> None:
        self.sums = {"loss": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0, "accuracy": 0.0, "pairs": 0.0}

    def add(self, loss: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, n: int) -> None:
        self.sums["loss"] += loss.item() * n
        self.sums["chosen_reward"] += float(chosen.sum())
        self.sums["rejected_reward"] += float(rejected.sum())
        self.sums["accuracy"] += float((chosen > rejected).float().sum())
        self.sums["pairs"] += n
