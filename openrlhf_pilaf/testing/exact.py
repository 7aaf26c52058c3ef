"""The engine's semantics in float64 from two Hugging Face models: the oracle tests and benchmarks check against.

Independent of vLLM: teacher-forced forwards of the two checkpoints with transformers, then the
documented rule (engines/rules.py, engines/vllm_interp/semantics.py) written out column by column:

    z(w)[j] = (1 + w) * h_policy[j] - w * h_ref[j]   for j < S = min(V_p, V_r)
    z(w)[j] = -inf                                    for S <= j < V_p (padding: never sampled, any w)
"""

from __future__ import annotations

import math

import torch


def hf_logits(model, token_ids: list[int]) -> torch.Tensor:
    """[T, V] float64 next-token logits at every position of `token_ids` (row t predicts token t + 1)."""
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].double()


def interpolated_logits(policy_logits: torch.Tensor, ref_logits: torch.Tensor, w: float) -> torch.Tensor:
    """[..., V_p] float64 logits z(w) under the engine's vocabulary rule."""
    hp, hr = policy_logits.double(), ref_logits.double()
    shared = min(hp.shape[-1], hr.shape[-1])
    z = torch.full_like(hp, -math.inf)
    z[..., :shared] = (1 + w) * hp[..., :shared] - w * hr[..., :shared]
    return z


def interpolated_logprobs(policy_logits: torch.Tensor, ref_logits: torch.Tensor, w: float) -> torch.Tensor:
    """log softmax of z(w) at temperature 1, float64."""
    return torch.log_softmax(interpolated_logits(policy_logits, ref_logits, w), dim=-1)
