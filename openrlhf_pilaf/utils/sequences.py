"""Batching of token sequences the way OpenRLHF's Actor consumes them."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def left_pad_with_action_mask(
    sequences: Sequence[Sequence[int]], prompt_lens: Sequence[int], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad prompt+response token lists into (input_ids, attention_mask, action_mask).

    `action_mask` is [B, T-1] and aligned with `Actor.forward`'s log-probs, whose entry t is the
    log-prob of token t+1: it is 1 exactly on the response tokens. Left padding keeps every
    response ending at the last column, which is what OpenRLHF's Actor and DPO code assume.
    """
    if len(sequences) != len(prompt_lens):
        raise ValueError(f"{len(sequences)} sequences but {len(prompt_lens)} prompt lengths")
    for i, (seq, pl) in enumerate(zip(sequences, prompt_lens, strict=True)):
        if not 0 < pl < len(seq):
            raise ValueError(f"sequence {i}: prompt length {pl} leaves no response in {len(seq)} tokens")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), T), dtype=torch.long)
    action = torch.zeros((len(sequences), T - 1), dtype=torch.float32)
    for i, (seq, pl) in enumerate(zip(sequences, prompt_lens, strict=True)):
        start = T - len(seq)
        ids[i, start:] = torch.as_tensor(seq, dtype=torch.long)
        attention[i, start:] = 1
        action[i, start + pl - 1 :] = 1
    return ids, attention, action


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: 0 at each row's first real token (padding gets 0 too, and is masked)."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
