"""`--pilaf.*`: which pair sampler an online / iterative DPO run uses, and its settings.

Validated at construction, naming the flag: an unknown sampler, a setting the chosen sampler does not
read (`--pilaf.n` with `--pilaf.sampler pilaf` is refused, not ignored), N < 2, w <= 0, mix_prob outside
[0, 1]. PILAF's w defaults to the DPO beta, as in the paper (pi_plus / pi_minus = the policy tilted by
+- its implicit reward, docs/interpolation.md); `build(beta)` resolves it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from openrlhf_pilaf.samplers.base import SAMPLERS, PairSampler
from openrlhf_pilaf.samplers.builtin import BestOfNSampler, PilafSampler
from openrlhf_pilaf.utils.config_cli import flag_name

DEFAULT_N = 8
DEFAULT_MIX_PROB = 0.5


def _flag(name: str) -> str:
    return flag_name(SamplerConfig, name)


@dataclass
class SamplerConfig:
    """How each prompt's preference pair is drawn."""

    cli_group: ClassVar[str] = "pilaf"

    sampler: str = field(
        default="pilaf",
        metadata={
            "help": "pair sampler: vanilla (2 policy draws), best_of_n (best and worst of N policy draws by the DPO "
            "implicit reward), hybrid (policy vs reference), pilaf (half vanilla, half pi_plus vs pi_minus)",
            "metavar": "{" + ",".join(sorted(SAMPLERS)) + "}",
        },
    )
    w: float | None = field(
        default=None,
        metadata={"help": "pilaf: interpolation weight of pi_plus (+w) / pi_minus (-w); default --dpo.beta"},
    )
    mix_prob: float | None = field(
        default=None,
        metadata={"help": f"pilaf: probability that a prompt gets a vanilla pair instead (default {DEFAULT_MIX_PROB})"},
    )
    n: int | None = field(
        default=None, metadata={"help": f"best_of_n: responses drawn per prompt (default {DEFAULT_N})"}
    )

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{_flag('sampler')} {self.sampler!r} is not a sampler; choose from {sorted(SAMPLERS)}")
        cls = SAMPLERS[self.sampler]
        for name in ("w", "mix_prob", "n"):
            if getattr(self, name) is not None and name not in cls.options:
                raise ValueError(f"{_flag(name)} is not a setting of {_flag('sampler')} {self.sampler}; remove it")
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2):
            raise ValueError(f"{_flag('n')} must be an integer >= 2 (best and worst of N), got {self.n!r}")
        if self.w is not None and not (math.isfinite(self.w) and self.w > 0):
            raise ValueError(f"{_flag('w')} must be a finite number > 0 (pi_plus uses +w, pi_minus -w), got {self.w}")
        if self.mix_prob is not None and not 0 <= self.mix_prob <= 1:
            raise ValueError(f"{_flag('mix_prob')} is a probability in [0, 1], got {self.mix_prob}")

    def build(self, beta: float) -> PairSampler:
        """The sampler, with defaults resolved (PILAF's w = the DPO beta)."""
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"the DPO beta must be a finite number > 0, got {beta}")
        cls = SAMPLERS[self.sampler]
        if cls is PilafSampler:
            return PilafSampler(
                self.w if self.w is not None else beta, DEFAULT_MIX_PROB if self.mix_prob is None else self.mix_prob
            )
        if cls is BestOfNSampler:
            return BestOfNSampler(DEFAULT_N if self.n is None else self.n, beta)
        return cls()
