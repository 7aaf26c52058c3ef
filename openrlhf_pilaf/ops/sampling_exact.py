"""The exact distribution `interpolated_sample` draws from, in float64: a slow, independent check.

Written row by row from the documented rule (docs/interpolation.md: interpolation, banned tokens,
temperature, top-k, then top-p on the top-k set, ties kept), sharing no code with the backends, so
tests can hold both backends (and any sampler or engine built on them) against it: log-probs to
1e-5, and chi-square goodness of fit of the drawn tokens.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class ExactDistribution(NamedTuple):
    probs: torch.Tensor  # [B, V] float64: the sampled distribution (interpolation, temperature, top-k/top-p)
    policy_logprobs: torch.Tensor  # [B, V] float64: log softmax of the policy logits (temperature 1)
    ref_logprobs: torch.Tensor | None  # [B, V] float64: log softmax of the reference logits


def _per_row(x: float | int | torch.Tensor, batch: int) -> list[float]:
    if isinstance(x, torch.Tensor):
        return [float(v) for v in x.double().cpu().tolist()]
    return [float(x)] * batch


def exact_distribution(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    w: float | torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_p: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    vocab_size: int | None = None,
) -> ExactDistribution:
    """Float64 version of the documented semantics (see `interpolated_sample`); inputs assumed valid."""
    widths = [policy_logits.shape[1]] + ([ref_logits.shape[1]] if ref_logits is not None else [])
    vocab = vocab_size or min(widths)
    hp = policy_logits[:, :vocab].double().cpu()
    hr = ref_logits[:, :vocab].double().cpu() if ref_logits is not None else None
    batch = hp.shape[0]
    ws, ts = _per_row(w, batch), _per_row(temperature, batch)
    ps, ks = _per_row(top_p, batch), _per_row(top_k, batch)
    probs = torch.zeros(batch, vocab, dtype=torch.float64)
    for i in range(batch):
        wi = ws[i]
        if wi == 0:
            z = hp[i].clone()
            banned = torch.isneginf(hp[i])
        else:
            banned = torch.isneginf(hp[i]) | torch.isneginf(hr[i])
            # Float32 rounding of (1 + w) and w, as the backends take them: the distribution they
            # sample is the one of these float32 weights.
            w32 = torch.tensor(wi, dtype=torch.float32).double()
            one_plus = (1 + torch.tensor(wi, dtype=torch.float32)).double()
            z = one_plus * hp[i] - w32 * hr[i]
        t32 = torch.tensor(ts[i], dtype=torch.float32).double()
        z = (z / t32).masked_fill(banned, -math.inf)
        p = torch.softmax(z, dim=0)
        order = torch.argsort(z, descending=True, stable=True)
        n_finite = int((~banned).sum())
        keep = ~banned
        k = int(ks[i])
        if 0 < k < n_finite:
            t_k = z[order[k - 1]]
            keep &= z >= t_k  # ties with the k-th largest are kept
        if ps[i] < 1:
            pk = torch.where(keep, p, 0.0)
            pk = pk / pk.sum()
            sorted_p = pk[order]
            cum = torch.cumsum(sorted_p, 0)
            p32 = float(torch.tensor(ps[i], dtype=torch.float32))
            j = int((cum < p32 * (1 - 1e-12)).sum())  # first sorted position reaching top_p
            j = min(j, int(keep.sum()) - 1)
            keep &= z >= z[order[j]]
        kept = torch.where(keep, p, 0.0)
        probs[i] = kept / kept.sum()
    policy_lp = torch.log_softmax(hp, dim=1)
    ref_lp = torch.log_softmax(hr, dim=1) if hr is not None else None
    return ExactDistribution(probs, policy_lp, ref_lp)
