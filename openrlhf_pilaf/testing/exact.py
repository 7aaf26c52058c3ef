"""The engine's semantics in float64 from two Hugging Face models: the oracle tests and benchmarks check against.

Independent of vLLM: teacher-forced forwards of the two checkpoints with transformers, then the
documented rule (docs/interpolation.md) written out column by column:

    z(w)[j] = (1 + w) * h_policy[j] - w * h_ref[j]   for j < S = min(V_p, V_r)
    z(w)[j] = -inf                                    for S <= j < V_p (padding: never sampled, any w)

and, for sampling with temperature / top-k / top-p, the filtered distribution of
`ops.sampling_exact.exact_distribution` at every prefix of a continuation (`sampled_distributions`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from openrlhf_pilaf.ops.sampling_exact import exact_distribution


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


def sampled_distributions(
    policy,
    reference,
    prompt: Sequence[int],
    continuations: torch.Tensor,
    w: float,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> torch.Tensor:
    """[N, n, S] float64: the distribution token t of each continuation was drawn from, at its prefix.

    `continuations` is [N, n] token ids that follow `prompt` (equal lengths, so one unpadded batched
    forward per model covers every prefix); row (i, t) is the distribution after interpolation at w,
    temperature and top-k / top-p (in that order, ops.sampling_exact) at prompt + continuations[i, :t],
    over the shared vocabulary S (the padding columns past it have probability 0). Pass unique rows:
    the cost is one forward of N sequences and N * n exact rows.
    """
    n = continuations.shape[1]
    ids = torch.cat([torch.tensor(list(prompt)).expand(continuations.shape[0], -1), continuations.cpu()], dim=1)
    rows = slice(len(prompt) - 1, len(prompt) - 1 + n)  # logits row r predicts token r + 1
    with torch.no_grad():
        hp = policy(ids).logits[:, rows].double()
        hr = reference(ids).logits[:, rows].double()
    shared = min(hp.shape[-1], hr.shape[-1])
    flat = exact_distribution(
        hp.reshape(-1, hp.shape[-1]),
        hr.reshape(-1, hr.shape[-1]),
        w,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        vocab_size=shared,
    )
    return flat.probs.reshape(continuations.shape[0], n, shared)
