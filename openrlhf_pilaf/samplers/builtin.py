"""The four samplers of the method's table (see docs/interpolation.md for w and the branches).

| sampler   | responses per prompt                           | pair                                      |
|-----------|------------------------------------------------|-------------------------------------------|
| vanilla   | 2 at w = 0                                     | both                                      |
| best_of_n | N at w = 0                                     | argmax / argmin of the DPO implicit reward |
| hybrid    | 1 at w = 0, 1 at w = -1 (the reference)        | both                                      |
| pilaf     | mix_prob: 2 at w = 0; else +w and -w           | both                                      |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from openrlhf_pilaf.pairs.types import Branch, Response
from openrlhf_pilaf.samplers.base import PairSampler, register_sampler


@register_sampler
class VanillaSampler(PairSampler):
    """Two independent draws from the policy (online DPO as in Guo et al. 2024)."""

    name = "vanilla"

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        return [(0.0, "policy"), (0.0, "policy")]


@register_sampler
class BestOfNSampler(PairSampler):
    """N draws from the policy; the pair is the best and the worst by the DPO implicit reward
    beta * (log pi(y|x) - log pi_ref(y|x)), summed exactly over each response."""

    name = "best_of_n"
    options = frozenset({"n"})

    def __init__(self, n: int, beta: float) -> None:
        self.n, self.beta = n, beta

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        return [(0.0, "policy")] * self.n

    def choose(self, responses: Sequence[Response]) -> tuple[int, int]:
        if len(responses) != self.n:
            raise ValueError(f"best_of_n with N = {self.n} got {len(responses)} responses for one prompt")
        rewards = [r.implicit_reward(self.beta) for r in responses]
        best = max(range(self.n), key=rewards.__getitem__)  # first of equal maxima
        worst = min((i for i in range(self.n) if i != best), key=rewards.__getitem__)
        return best, worst


@register_sampler
class HybridSampler(PairSampler):
    """One response from the policy, one from the reference (XPO-style sampling)."""

    name = "hybrid"

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        return [(0.0, "policy"), (-1.0, "reference")]


@register_sampler
class PilafSampler(PairSampler):
    """PILAF (Feng et al. 2025, Algorithm 1): with probability mix_prob a vanilla pair, otherwise one
    response from pi_plus (w = +w) and one from pi_minus (w = -w), token-level interpolation."""

    name = "pilaf"
    options = frozenset({"w", "mix_prob"})

    def __init__(self, w: float, mix_prob: float) -> None:
        self.w, self.mix_prob = w, mix_prob

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        if rng.random() < self.mix_prob:
            return [(0.0, "policy"), (0.0, "policy")]
        return [(self.w, "pi_plus"), (-self.w, "pi_minus")]
