"""Goodness of fit: the tokens drawn follow the exact (float64) interpolated distribution.

Each case draws N = 200,000 tokens in one call (N rows of the same logits, fixed seed) and runs
Pearson's chi-square test (scipy.stats.chisquare) against the float64 distribution, bins with an
expected count below 5 merged. A case passes at significance ALPHA = 1e-3; with fixed seeds the
outcome is deterministic. Power: the same test must reject (p < 1e-6) when the expected
distribution is built from a deliberately wrong formula (sign of w flipped, top-p ignored,
temperature ignored), which shows N is large enough to see such mistakes.
"""

from __future__ import annotations

import pytest
import torch

from openrlhf_pilaf.ops import exact_distribution, interpolated_sample
from tests.stats import chisquare_pvalue

N = 200_000
ALPHA = 1e-3
W_VALUES = [-1.0, -0.1, 0.0, 0.1, 0.5]
CASES = {  # name: (vocabulary size, sampling parameters)
    "plain": (8, {}),
    "temperature": (16, {"temperature": 0.7}),
    "top_k": (24, {"top_k": 6}),
    "top_p": (32, {"top_p": 0.9}),
    "top_k+top_p": (64, {"top_k": 20, "top_p": 0.9, "temperature": 1.2}),
}


def _draw(vocab: int, w: float, seed: int, params: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    hp, hr = torch.randn(1, vocab, generator=g) * 1.2, torch.randn(1, vocab, generator=g) * 1.2
    out = interpolated_sample(hp.expand(N, vocab), hr.expand(N, vocab), w, generator=g, backend="torch", **params)
    return out.token_ids, hp, hr


@pytest.mark.parametrize("w", W_VALUES)
@pytest.mark.parametrize("case", list(CASES))
def test_draws_follow_the_exact_distribution(case, w):
    vocab, params = CASES[case]
    tokens, hp, hr = _draw(vocab, w, seed=1000 + vocab, params=params)
    probs = exact_distribution(hp, hr, w, **params).probs[0]
    pvalue = chisquare_pvalue(tokens, probs)
    assert pvalue > ALPHA, f"{case}, w={w}: chi-square p = {pvalue:.2e}"


WRONG = {
    "sign of w flipped": (0.1, {}, lambda hp, hr, w, p: exact_distribution(hp, hr, -w, **p)),
    "sign of w flipped, filtered": (-0.1, {"top_k": 6}, lambda hp, hr, w, p: exact_distribution(hp, hr, -w, **p)),
    "reference for pi_plus": (0.5, {}, lambda hp, hr, w, p: exact_distribution(hp, hr, -1.0, **p)),
    "top-p ignored": (0.1, {"top_p": 0.95}, lambda hp, hr, w, p: exact_distribution(hp, hr, w)),
    "temperature ignored": (0.1, {"temperature": 0.8}, lambda hp, hr, w, p: exact_distribution(hp, hr, w)),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_the_test_rejects_a_wrong_formula(name):
    w, params, wrong = WRONG[name]
    vocab = 16
    tokens, hp, hr = _draw(vocab, w, seed=77, params=params)
    probs = wrong(hp, hr, w, params).probs[0]
    counts_ok = torch.bincount(tokens, minlength=vocab)[probs == 0].sum() == 0
    pvalue = chisquare_pvalue(tokens, probs) if counts_ok else 0.0
    assert pvalue < 1e-6, f"{name}: the wrong formula was not rejected (p = {pvalue:.2e})"
