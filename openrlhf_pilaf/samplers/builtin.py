"""The four samplers of the method's table (see docs/interpolation.md for w and the branches).

| sampler   | responses per prompt                           | pair                                      |
|-----------|------------------------------------------------|-------------------------------------------|
| vanilla   | 2 at w = 0                                     | both                                      |
| best_of_n | N at w = 0                                     | argmax / argmin of the DPO implicit reward |
| hybrid    | 1 at w = 0, 1 at w = -1 (the reference)        | both                                      |
| pilaf     | mix_prob: 2 at w = 0; else +w and -w           | both                                      |

Each declares its own `--pilaf.*` options (a nested `Options`) and builds itself from them; registering
them here, in this order, is what makes them (and their flags, in this order) available.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from openrlhf_pilaf.pairs.types import Branch, Response
from openrlhf_pilaf.samplers.base import PairSampler, SamplerOptions, register_sampler


@register_sampler
class VanillaSampler(PairSampler):
    """Two independent draws from the policy (online DPO as in Guo et al. 2024)."""

    name = "vanilla"
    summary = "2 policy draws"

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        return [(0.0, "policy"), (0.0, "policy")]


@register_sampler
class BestOfNSampler(PairSampler):
    """N draws from the policy; the pair is the best and the worst by the DPO implicit reward
    beta * (log pi(y|x) - log pi_ref(y|x)), summed exactly over each response."""

    name = "best_of_n"
    summary = "best and worst of N policy draws by the DPO implicit reward"

    @dataclass(frozen=True)
    class Options(SamplerOptions):
        n: int = field(default=8, metadata={"help": "responses drawn per prompt"})

        def __post_init__(self) -> None:
            super().__post_init__()
            if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
                raise ValueError(f"{self.flag('n')} must be an integer >= 2 (best and worst of N), got {self.n!r}")

    def __init__(self, n: int, beta: float) -> None:
        self.n, self.beta = n, beta

    @classmethod
    def from_options(cls, options: Options, beta: float) -> BestOfNSampler:
        return cls(options.n, beta)  # beta: the implicit reward that ranks the N responses

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
    summary = "policy vs reference"

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        return [(0.0, "policy"), (-1.0, "reference")]


@register_sampler
class PilafSampler(PairSampler):
    """PILAF (Feng et al. 2025, Algorithm 1): with probability mix_prob a vanilla pair, otherwise one
    response from pi_plus (w = +w) and one from pi_minus (w = -w), token-level interpolation."""

    name = "pilaf"
    summary = "half vanilla, half pi_plus vs pi_minus"

    @dataclass(frozen=True)
    class Options(SamplerOptions):
        # None until build: the paper's w is the DPO beta (pi_plus / pi_minus = the policy tilted by +- its
        # implicit reward, docs/interpolation.md), which only the run knows.
        w: float | None = field(
            default=None,
            metadata={"help": "interpolation weight of pi_plus (+w) / pi_minus (-w); default --dpo.beta"},
        )
        mix_prob: float = field(default=0.5, metadata={"help": "probability that a prompt gets a vanilla pair instead"})

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.w is not None and not (math.isfinite(self.w) and self.w > 0):
                raise ValueError(
                    f"{self.flag('w')} must be a finite number > 0 (pi_plus uses +w, pi_minus -w), got {self.w}"
                )
            if not 0 <= self.mix_prob <= 1:
                raise ValueError(f"{self.flag('mix_prob')} is a probability in [0, 1], got {self.mix_prob}")

    def __init__(self, w: float, mix_prob: float) -> None:
        self.w, self.mix_prob = w, mix_prob

    @classmethod
    def from_options(cls, options: Options, beta: float) -> PilafSampler:
        return cls(beta if options.w is None else options.w, options.mix_prob)

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        if rng.random() < self.mix_prob:
            return [(0.0, "policy"), (0.0, "policy")]
        return [(self.w, "pi_plus"), (-self.w, "pi_minus")]
