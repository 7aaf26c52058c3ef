"""The records that flow from the sampler to the DPO step.

A `Response` is one generated sequence with the sums the DPO loss and best-of-N need
(log pi(y|x) and log pi_ref(y|x), both at temperature 1, see docs/interpolation.md) and where it came
from: its branch and w. A `CandidatePair` is two responses to one prompt in the order they are shown to
the oracle (randomised by the sampler, so position carries no information); a `LabelledPair` adds the
oracle's scores and its label. Branch and w travel with every response so that the pair log and the
cost counters can say what each sampler really spent, and so that a labeller export can drop them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from openrlhf_pilaf.engines.interface import GeneratedSample

Branch = Literal["policy", "pi_plus", "pi_minus", "reference", "interpolated"]
BRANCHES: tuple[str, ...] = ("policy", "pi_plus", "pi_minus", "reference", "interpolated")

Label = Literal["a", "b"]


def branch_of(w: float, pilaf_w: float | None = None) -> Branch:
    """The distribution a row with weight w was drawn from: 0 the policy, -1 the reference, +-pilaf_w PILAF's."""
    if w == 0:
        return "policy"
    if w == -1:
        return "reference"
    if pilaf_w is not None and w == pilaf_w:
        return "pi_plus"
    if pilaf_w is not None and w == -pilaf_w:
        return "pi_minus"
    return "interpolated"


@dataclass(frozen=True)
class Response:
    """One response y to a prompt x, with per-token log-probs under the policy and the reference (temperature 1).

    `reference_logprobs` are log pi_ref(y_t | x, y_<t) whichever computation gave them (the engine's decode, or a
    teacher-forced reference forward for rows the engine did not decode the reference on: the PyTorch engine's
    w = 0 rows, `GeneratedSample.reference_logprobs_from`): one quantity, so a pair may mix the two sources and the
    DPO loss still reads the same reference term, equal to float32 noise (engines/torch_engine.py states the bound).
    """

    token_ids: tuple[int, ...]
    branch: Branch
    w: float
    policy_logprobs: tuple[float, ...]
    reference_logprobs: tuple[float, ...]
    finish_reason: str = "stop"
    text: str | None = None

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if len(self.policy_logprobs) != n or len(self.reference_logprobs) != n:
            raise ValueError(
                f"a response of {n} tokens needs {n} policy and reference log-probs, got "
                f"{len(self.policy_logprobs)} and {len(self.reference_logprobs)}"
            )
        if not all(math.isfinite(v) for v in (*self.policy_logprobs, *self.reference_logprobs)):
            raise ValueError("a response's log-probs must be finite (a token outside the shared vocabulary?)")

    @classmethod
    def from_sample(cls, sample: GeneratedSample, branch: Branch) -> Response:
        if sample.policy_logprobs is None or sample.reference_logprobs is None:
            raise ValueError(
                "a response needs policy and reference log-probs: generate with reference_logprobs=True or fill them "
                "with openrlhf_pilaf.engines.scoring"
            )
        return cls(
            token_ids=tuple(sample.token_ids),
            branch=branch,
            w=float(sample.w),
            policy_logprobs=tuple(float(v) for v in sample.policy_logprobs),
            reference_logprobs=tuple(float(v) for v in sample.reference_logprobs),
            finish_reason=sample.finish_reason,
        )

    @property
    def logp_policy(self) -> float:
        """log pi(y|x), summed over the response tokens."""
        return math.fsum(self.policy_logprobs)

    @property
    def logp_reference(self) -> float:
        """log pi_ref(y|x), summed over the response tokens."""
        return math.fsum(self.reference_logprobs)

    def implicit_reward(self, beta: float) -> float:
        """DPO's implicit reward beta * (log pi(y|x) - log pi_ref(y|x)), exact (not OpenRLHF's clamped per-token KL)."""
        return beta * (self.logp_policy - self.logp_reference)


@dataclass(frozen=True)
class CandidatePair:
    """Two responses to prompt `prompt_index` of a step, in the order the oracle sees them."""

    pair_id: str
    step: int
    prompt_index: int
    prompt_ids: tuple[int, ...]
    a: Response
    b: Response
    prompt: str | None = None  # the prompt text, as the oracle and the pair log see it
    # How many model forwards per token the sampler spent on this pair (candidates best-of-N discarded included).
    policy_forwards: int = 0
    reference_forwards: int = 0


@dataclass(frozen=True)
class LabelledPair:
    """A candidate pair and the oracle's verdict; `chosen` / `rejected` follow the label."""

    pair: CandidatePair
    score_a: float
    score_b: float
    label: Label
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.label not in ("a", "b"):
            raise ValueError(f"label must be 'a' or 'b', got {self.label!r}")

    @property
    def chosen(self) -> Response:
        return self.pair.a if self.label == "a" else self.pair.b

    @property
    def rejected(self) -> Response:
        return self.pair.b if self.label == "a" else self.pair.a
