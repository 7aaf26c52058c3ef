"""Statistical helpers shared by the distribution tests."""

from __future__ import annotations

import torch
from scipy.stats import chisquare


def chisquare_pvalue(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of the draws against probs [V]; bins expected below 5 are pooled."""
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    zero = probs == 0
    assert counts[zero].sum() == 0, f"tokens of probability 0 were drawn: {torch.nonzero(counts * zero).flatten()}"
    obs, exp = counts[~zero], probs[~zero] * tokens.numel()
    small = exp < 5
    if small.any():
        pooled_obs, pooled_exp = obs[small].sum(), exp[small].sum()
        obs, exp = obs[~small], exp[~small]
        if pooled_exp >= 5 or obs.numel() <= 1:  # keep at least two bins: a test needs an alternative
            obs, exp = torch.cat([obs, pooled_obs[None]]), torch.cat([exp, pooled_exp[None]])
        else:  # still too small on its own: fold into the smallest remaining bin
            i = int(exp.argmin())
            obs[i] += pooled_obs
            exp[i] += pooled_exp
    if obs.numel() < 2:
        return 1.0  # a single possible outcome: nothing to test
    exp = exp * (obs.sum() / exp.sum())  # rounding of the float64 probabilities
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)
