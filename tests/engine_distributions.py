"""The filtered-sampling check both engines' tests run (PyTorch in test_torch_engine.py, vLLM in
test_vllm_interp_engine.py): many continuations of a few tokens, drawn at temperature != 1 with top-k
and top-p, held against the exact float64 distribution at every prefix (testing/exact.py).

- (a) sampled log-probs, where an engine returns them, are the exact filtered distribution's;
- (b) no drawn token lies outside the kept (top-k / top-p) set of its prefix;
- (c) the SECOND token, given the most likely first token, fits the exact distribution (chi-square),
  and the same test rejects two wrong settings, the flipped w and temperature 1, whose weights are
  taken on the right kept set so that the rejection comes from the weights, not from the support.
The check also confirms that both filters cut at that prefix (each alone keeps more tokens than
both) and that the mass they drop is large enough for an engine that ignored them to be caught by (b).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from openrlhf_pilaf.ops.sampling_exact import exact_distribution
from openrlhf_pilaf.testing.exact import hf_logits, sampled_distributions
from tests.stats import chisquare_pvalue

# Temperature above 1 spreads the tiny models' peaked distributions, so that top-k (8) and top-p (0.9,
# on the top-k set) both cut; at temperature 0.7 top-p alone keeps <= 9 tokens and top-k 20 never would.
FILTERED = {"temperature": 1.5, "top_k": 8, "top_p": 0.9}
FILTERED_WS = (0.0, 0.1, -1.0)
CHI2_ALPHA = 1e-3  # per chi-square test of the right distribution
POWER_P_MAX = 1e-6  # each wrong setting must be rejected far below any sensible significance
MIN_SECOND_DRAWS = 1_000  # second-token draws given the first: the power computed beforehand needs ~300
MIN_DROPPED_MASS = 0.05  # what the filters remove at that prefix, without them, would be drawn ~50 times


def _wrong_on_kept_set(kept: torch.Tensor, hp: torch.Tensor, hr: torch.Tensor, w: float, temperature: float):
    q = torch.where(kept, exact_distribution(hp, hr, w, temperature=temperature).probs[0], 0.0)
    return q / q.sum()


@dataclass
class FilteredDrawsReport:
    w: float
    draws: int
    outside_kept: int  # drawn tokens of probability 0 under the exact filtered distribution of their prefix
    logprob_error: float | None  # max |returned sampled log-prob - exact|; None when not returned
    first: int  # the most likely first token (exact)
    second_draws: int
    kept: int
    kept_top_k_alone: int
    kept_top_p_alone: int
    dropped_mass: float
    p_right: float
    p_flipped_w: float
    p_temperature_1: float

    def __str__(self) -> str:
        lp = f"max |sampled lp - exact| {self.logprob_error:.1e}; " if self.logprob_error is not None else ""
        return (
            f"w={self.w:+.1f}, {self.draws} draws, {self.outside_kept} outside the kept sets; {lp}2nd token given "
            f"{self.first}: {self.second_draws} draws, {self.kept} kept (top-k alone {self.kept_top_k_alone}, "
            f"top-p alone {self.kept_top_p_alone}, dropped mass {self.dropped_mass:.2f}); chi-square p = "
            f"{self.p_right:.3g}, flipped w {self.p_flipped_w:.3g}, temperature 1 {self.p_temperature_1:.3g}"
        )

    def assert_matches(self, logprob_tol: float) -> None:
        assert self.outside_kept == 0, f"tokens outside the top-k / top-p set were drawn: {self}"
        assert self.logprob_error is None or self.logprob_error < logprob_tol, str(self)
        assert self.second_draws >= MIN_SECOND_DRAWS, str(self)
        assert self.kept < min(self.kept_top_k_alone, self.kept_top_p_alone), f"a filter does not cut: {self}"
        assert self.dropped_mass > MIN_DROPPED_MASS, str(self)
        assert self.p_right > CHI2_ALPHA, str(self)
        assert self.p_flipped_w < POWER_P_MAX and self.p_temperature_1 < POWER_P_MAX, f"no power: {self}"


def check_filtered_draws(
    policy,
    reference,
    prompt: Sequence[int],
    tokens: torch.Tensor,
    w: float,
    sampled_logprobs: torch.Tensor | None = None,
) -> FilteredDrawsReport:
    """`tokens` [N, n >= 2]: continuations of `prompt` drawn at w with FILTERED; `sampled_logprobs` [N, n]."""
    settings = FILTERED
    unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)
    probs = sampled_distributions(policy, reference, prompt, unique, w, **settings)  # [U, n, S]
    drawn_p = probs.gather(-1, unique[..., None]).squeeze(-1)[inverse]  # [N, n]
    error = None
    if sampled_logprobs is not None:
        error = (sampled_logprobs.double() - drawn_p.log()).abs().max().item()

    def logits(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return hf_logits(policy, ids)[-1:], hf_logits(reference, ids)[-1:]

    first = int(exact_distribution(*logits(list(prompt)), w, **settings).probs[0].argmax())
    second = tokens[tokens[:, 0] == first, 1]
    hp, hr = logits([*prompt, first])
    right = exact_distribution(hp, hr, w, **settings).probs[0]
    kept = right > 0
    temperature = settings["temperature"]

    def kept_by(**one_filter) -> int:
        return int((exact_distribution(hp, hr, w, temperature=temperature, **one_filter).probs[0] > 0).sum())

    unfiltered = exact_distribution(hp, hr, w, temperature=temperature).probs[0]
    flipped = -w if w != 0 else -1.0  # w = 0: the reference instead

    outside = int((drawn_p == 0).sum())

    def p_value(q: torch.Tensor) -> float:  # NaN where (b) already failed or there is nothing to test
        return chisquare_pvalue(second, q) if second.numel() > 1 and outside == 0 else float("nan")

    return FilteredDrawsReport(
        w=w,
        draws=tokens.shape[0],
        outside_kept=outside,
        logprob_error=error,
        first=first,
        second_draws=second.numel(),
        kept=int(kept.sum()),
        kept_top_k_alone=kept_by(top_k=settings["top_k"]),
        kept_top_p_alone=kept_by(top_p=settings["top_p"]),
        dropped_mass=1 - unfiltered[kept].sum().item(),
        p_right=p_value(right),
        p_flipped_w=p_value(_wrong_on_kept_set(kept, hp, hr, flipped, temperature)),
        p_temperature_1=p_value(_wrong_on_kept_set(kept, hp, hr, w, 1.0)),
    )
