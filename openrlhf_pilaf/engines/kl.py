"""The KL of an evaluation: sequence-level KL(pi || pi_ref) by Monte Carlo over the policy's own samples.

One estimator for every command that reports `kl` (the run's `--eval.*`, `trainer.online_dpo.evaluation`,
and `cli.evaluate`), defined in docs/interpolation.md, "The evaluation KL". For samples y_i ~ pi(.|x_i)
at w = 0 and temperature 1 each term is the response's log-ratio

    d_i = sum_t [ log pi(y_t | x, y_<t) - log pi_ref(y_t | x, y_<t) ]        (`sequence_log_ratio`)

whose mean is unbiased for KL(pi || pi_ref) averaged over the prompts, with standard error
std(d) / sqrt(n) (`evaluation.summarize`).

The two log-probs of a term must come from the same numerics, or the kernel noise between two code
paths does not cancel in the difference (and is summed over every token): `MatchedLogprobs` sets both
fields from one kind of forward (two Hugging Face forwards, or two OpenRLHF actor forwards). Every engine
of this project needs one: vLLM's log-probs are its kernels', and the PyTorch engine takes a w = 0 row's
policy log-probs from its KV-cache decode but its reference log-probs from a teacher-forced forward (it does
not decode the reference there). A policy evaluated against itself then has every d_i exactly 0.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from openrlhf_pilaf.engines.interface import GeneratedSample

logger = logging.getLogger(__name__)

# samples -> one list of per-token log-probs per sample (its response tokens, in order)
LogprobRows = Callable[[Sequence[GeneratedSample]], list[list[float]]]


def sequence_log_ratio(sample: GeneratedSample) -> float:
    """d = sum_t log pi(y_t) - sum_t log pi_ref(y_t) of one response (math.fsum: the order of tokens cannot matter).

    Refused when a log-prob field is missing or does not cover the response: a KL term over part of a response,
    or over a field an engine left empty, would be silently wrong.
    """
    n = len(sample.token_ids)
    for name in ("policy_logprobs", "reference_logprobs"):
        lps = getattr(sample, name)
        if lps is None:
            raise ValueError(
                f"sample of prompt {sample.prompt}: {name} is missing; the KL needs both log-probs from one forward "
                "(engines.kl.MatchedLogprobs, or an engine that returns both)"
            )
        if len(lps) != n:
            raise ValueError(f"sample of prompt {sample.prompt}: {len(lps)} {name} for {n} response tokens")
    return math.fsum(sample.policy_logprobs) - math.fsum(sample.reference_logprobs)


def kl_terms(samples: Sequence[GeneratedSample]) -> list[float]:
    """The Monte Carlo terms d_i of KL(pi || pi_ref), one per sample; their mean is the estimate.

    Only samples of the policy itself (w = 0) estimate its KL: one drawn at another w is refused.
    Temperature is the caller's to keep at 1 (a sample does not record it): other temperatures give the mean
    log-ratio over tempered samples, not KL(pi || pi_ref).
    """
    off = [s.w for s in samples if s.w != 0.0]
    if off:
        raise ValueError(f"the KL estimate needs samples of the policy (w = 0), got w = {sorted(set(off))}")
    return [sequence_log_ratio(s) for s in samples]


@dataclass(frozen=True)
class MatchedLogprobs:
    """Set both log-prob fields of every sample from one kind of forward, so that their difference is the models'.

    `policy` and `reference` must be the same computation on two models (same kernels, dtype, padding and
    batching), e.g. `engines.scoring.teacher_forced_logprobs` (Hugging Face forwards) or
    `engines.scoring.actor_group_logprobs` (OpenRLHF actor forwards); `reference` None means the reference is the
    policy itself, whose rows are then reused (every KL term exactly 0). Log-probs an engine already returned
    are replaced, and their largest difference from the new ones is logged (the kernel noise that would not
    have cancelled).
    """

    policy: LogprobRows
    reference: LogprobRows | None
    description: str  # the log line's subject: which forward both come from ("teacher-forced log-probs")

    def __call__(self, samples: list[GeneratedSample]) -> None:
        rows = [s for s in samples if s.token_ids]
        policy_rows = self.policy(rows)
        reference_rows = policy_rows if self.reference is None else self.reference(rows)
        if len(policy_rows) != len(rows) or len(reference_rows) != len(rows):
            raise RuntimeError(
                f"{self.description}: {len(policy_rows)} policy and {len(reference_rows)} reference rows for "
                f"{len(rows)} samples"
            )
        drift = 0.0
        for s, lp, lq in zip(rows, policy_rows, reference_rows, strict=True):
            if len(lp) != len(s.token_ids) or len(lq) != len(s.token_ids):
                raise RuntimeError(
                    f"{self.description}: {len(lp)} / {len(lq)} log-probs for {len(s.token_ids)} response tokens"
                )
            if s.policy_logprobs is not None and len(s.policy_logprobs) == len(lp):
                drift = max([drift, *(abs(a - b) for a, b in zip(s.policy_logprobs, lp, strict=True))])
            s.policy_logprobs, s.reference_logprobs = list(lp), list(lq)
        for s in samples:
            if not s.token_ids:
                s.policy_logprobs, s.reference_logprobs = [], []
        logger.info(
            "%s of %d responses; engine vs forward, largest |difference| %.2e", self.description, len(rows), drift
        )
