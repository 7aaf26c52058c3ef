"""Teacher-forced log-probs of generated samples: fill what an engine did not return.

A vLLM engine returns one kind of log-prob per token (the policy's, the reference's or the sampled
distribution's, see vllm_interp/semantics.py); best-of-n selection and DPO's implicit reward need the
policy's and the reference's. Like OpenRLHF's reference actor, we get the missing ones by a forward of
the full sequences: left-padded (`utils.sequences`), log_softmax over the model's own vocabulary,
gathered at the response tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from openrlhf_pilaf.engines.interface import GeneratedSample
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask, position_ids

Field = Literal["policy_logprobs", "reference_logprobs"]


@torch.no_grad()
def response_logprobs(
    model: nn.Module, samples: Sequence[GeneratedSample], *, pad_token_id: int, batch_size: int = 16
) -> list[list[float]]:
    """log model(token_t | prompt, tokens_<t) for every response token of every sample, float32."""
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        seqs = [s.prompt_ids + s.token_ids for s in chunk]
        ids, attention, action = left_pad_with_action_mask(seqs, [len(s.prompt_ids) for s in chunk], pad_token_id)
        ids, attention = ids.to(device), attention.to(device)
        positions = position_ids(attention)
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, :-1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1).cpu()
        for i, s in enumerate(chunk):
            row = lp[i][action[i].bool()]
            out.append(row.tolist()[: len(s.token_ids)])
    return out


def fill_logprobs(
    samples: Sequence[GeneratedSample],
    model: nn.Module,
    field: Field,
    *,
    pad_token_id: int,
    batch_size: int = 16,
) -> None:
    """Set `field` on every sample where it is None (in place), from `model`'s teacher-forced forward."""
    if field not in ("policy_logprobs", "reference_logprobs"):
        raise ValueError(f"field must be 'policy_logprobs' or 'reference_logprobs', got {field!r}")
    todo = [s for s in samples if getattr(s, field) is None and s.token_ids]
    for s, row in zip(
        todo, response_logprobs(model, todo, pad_token_id=pad_token_id, batch_size=batch_size), strict=True
    ):
        setattr(s, field, row)
    for s in samples:
        if getattr(s, field) is None:  # empty responses
            setattr(s, field, [])
