"""The one generation interface every engine implements and the samplers, the DPO driver, the evaluation
and the demo call: `engine.generate(plan, params)`.

Samplers (vanilla, best-of-n, hybrid, PILAF) differ only in which prompt gets how many samples at
which weight w, so they hand an engine a `GenerationPlan`:

    plan = GenerationPlan(prompts=[ids_a, ids_b], samples=[SampleSpec(0, 0.0), SampleSpec(0, 0.0),
                                                           SampleSpec(1, +0.1), SampleSpec(1, -0.1)])
    results = engine.generate(plan, GenerationParams(max_new_tokens=256))

and get back one `GeneratedSample` per `SampleSpec`, in plan order. Each row is drawn from
z(w) = (1 + w) * h_policy - w * h_ref, then temperature, top-k and top-p (w = 0 the policy, -1 the
reference, +beta / -beta PILAF's pi_plus / pi_minus; docs/interpolation.md has the maths).

Log-probs are explicit about whose they are (never one ambiguous "logprobs" field): `policy_logprobs`,
`reference_logprobs` (the models' own, temperature 1, unfiltered) and `sampled_logprobs` (the
distribution the token was drawn from); docs/interpolation.md, "The three kinds of log-probs". An
engine fills what it computes and leaves the rest None; `engines.scoring` fills the others by a
teacher-forced forward (what OpenRLHF's reference actor does), so the DPO implicit reward is always
computable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from openrlhf_pilaf.engines.rules import check_w
from openrlhf_pilaf.utils.checks import check_int, is_int

FinishReason = Literal["stop", "length"]
# Which computation gave a sample's reference log-probs: "decode" the reference's forwards while the row was
# decoded (its own KV cache), "scored" a teacher-forced reference forward over prompt + response afterwards
# (`engines.scoring`). Both are log pi_ref(y_t | x, y_<t) under the same weights, in another order of float
# operations (docs/interpolation.md, "Which computation gives the reference log-probs").
ReferenceSource = Literal["decode", "scored"]


@dataclass(frozen=True)
class SampleSpec:
    """One sequence to generate: from prompt `plan.prompts[prompt]` at interpolation weight `w`."""

    prompt: int
    w: float = 0.0


@dataclass(frozen=True)
class GenerationPlan:
    """Prompts as token ids (chat template applied, no padding) and the samples wanted from them.

    `texts`, when given, are the prompts as text: OpenRLHF's rollout actors tokenise text themselves (and the
    Ray engine checks that they give back exactly `prompts`); engines that take ids ignore them."""

    prompts: Sequence[Sequence[int]]
    samples: Sequence[SampleSpec]
    texts: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.texts is not None and len(self.texts) != len(self.prompts):
            raise ValueError(f"{len(self.prompts)} prompts but {len(self.texts)} prompt texts")
        for i, p in enumerate(self.prompts):
            if len(p) == 0:
                raise ValueError(f"prompt {i} is empty: every sample needs at least one prompt token")
            if not all(is_int(t, min=0) for t in p):
                raise ValueError(f"prompt {i}: token ids must be non-negative ints")
        for j, s in enumerate(self.samples):
            if not isinstance(s, SampleSpec):
                raise ValueError(f"samples[{j}] is a {type(s).__name__}, not a SampleSpec")
            if not 0 <= s.prompt < len(self.prompts):
                raise ValueError(f"samples[{j}] asks for prompt {s.prompt}, but the plan has {len(self.prompts)}")
            check_w(s.w, f"samples[{j}].w")

    @classmethod
    def grid(
        cls, prompts: Sequence[Sequence[int]], ws: Sequence[float], texts: Sequence[str] | None = None
    ) -> GenerationPlan:
        """Every prompt at every w in `ws` (repeat a w for several samples at it), prompt-major."""
        return cls(prompts, [SampleSpec(i, float(w)) for i in range(len(prompts)) for w in ws], texts)

    @property
    def uses_reference(self) -> bool:
        return any(s.w != 0 for s in self.samples)


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings shared by every row of a plan."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    # Token ids that end a sequence (kept as its last token); None: the tokenizer's EOS; (): none, every
    # row runs to max_new_tokens (benchmarks).
    stop_token_ids: tuple[int, ...] | None = None
    seed: int | None = None
    # Also return the reference's log-probs for every token. The PyTorch engine decodes the reference only on rows
    # with w != 0 either way (a vanilla batch costs one model, a PILAF batch about 1.5); with this on, its rows at
    # w = 0 then get theirs from one batched teacher-forced reference forward (`GeneratedSample.reference_logprobs_from`
    # says which).
    reference_logprobs: bool = True

    def __post_init__(self) -> None:
        check_int(self.max_new_tokens, "max_new_tokens", min=1)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r} (use top_k=1 for greedy decoding)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        check_int(self.top_k, "top_k (0 disables it)", min=0)
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))


@dataclass
class GeneratedSample:
    """One generated sequence and the log-probs of each of its tokens (lists of len(token_ids))."""

    prompt: int
    w: float
    prompt_ids: list[int]
    token_ids: list[int]
    finish_reason: FinishReason
    policy_logprobs: list[float] | None = None
    reference_logprobs: list[float] | None = None
    sampled_logprobs: list[float] | None = None
    # (policy, reference) model passes this row's generated tokens went through, as the engine (and any scoring
    # after it) ran them: what the row cost, which may exceed what sampling at w needs (`samplers.model_forwards`).
    # None: the engine does not report it.
    forwards_run: tuple[int, int] | None = None
    # Which computation gave `reference_logprobs` ("decode" / "scored", `ReferenceSource`); None: none, or not said.
    reference_logprobs_from: ReferenceSource | None = None

    def count_forwards(self, policy: int = 0, reference: int = 0) -> None:
        """Add model passes over this row's tokens (a teacher-forced scoring pass counts as one)."""
        p, r = self.forwards_run or (0, 0)
        self.forwards_run = (p + policy, r + reference)

    def implicit_reward(self, beta: float) -> float:
        """DPO's implicit reward beta * sum_t (log pi - log pi_ref) of the response, from the models' own log-probs
        (never the sampled ones: docs/interpolation.md, "The DPO implicit reward")."""
        if self.policy_logprobs is None or self.reference_logprobs is None:
            raise ValueError("implicit_reward needs policy and reference log-probs; fill them with engines.scoring")
        return beta * (sum(self.policy_logprobs) - sum(self.reference_logprobs))


@runtime_checkable
class GenerationEngine(Protocol):
    """What samplers need from an engine."""

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        """One GeneratedSample per plan.samples entry, in order."""
        ...
