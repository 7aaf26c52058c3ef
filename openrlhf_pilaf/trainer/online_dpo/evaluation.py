"""Evaluation of a policy on held-out prompts: oracle reward, KL to the reference, and J = reward - beta * KL.

The run's `--eval.*` (every `--eval.steps`, or after every round) and `cli.evaluate` both go through
`run_policy_evaluation`, so the two report the same quantities under the same keys. The KL is
sequence-level and estimated by Monte Carlo over the policy's own samples (w = 0): the mean of
log pi(y|x) - log pi_ref(y|x), both at temperature 1 and from the same numerics, with its standard
error (`engines.kl`; docs/interpolation.md, "The evaluation KL"). The reward is the oracle scorer's
score (not a label), with a 95% normal interval. These are the quantities of the paper's tables
(J = reward - 0.1 * KL there).

Where both log-probs come from: the engine only samples, and both are recomputed by one kind of
forward, a `engines.kl.MatchedLogprobs`: teacher-forced Hugging Face forwards
(`engines.scoring.teacher_forced_logprobs`) for `cli.evaluate` on either engine and for a run on
`--engine torch` (`eval_engine.torch_engine_logprobs`: the PyTorch engine's decode gives a w = 0 row its
policy log-probs from the KV-cache decode and its reference log-probs from a teacher-forced forward, which
would not cancel), `engines.scoring.actor_group_logprobs` for a Ray run (the learner's and the reference
actor's forwards). `logprobs=None` is for an engine that returns both from one computation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.kl import MatchedLogprobs, kl_terms
from openrlhf_pilaf.oracle.oracle import PreferenceOracle
from openrlhf_pilaf.oracle.scorers import Scorer, ScoreRequest
from openrlhf_pilaf.trainer.dpo.prompts import Prompt


def summarize(rewards: Sequence[float], kls: Sequence[float], beta: float) -> dict[str, float]:
    """Means, the reward's 95% normal interval and the KL's standard error (n - 1 in both), and J."""
    r, k = np.asarray(rewards, dtype=np.float64), np.asarray(kls, dtype=np.float64)
    n = len(r)
    if n == 0 or len(k) != n:
        raise ValueError(f"evaluation needs as many rewards as KL terms, got {len(r)} and {len(k)}")
    r_se = float(r.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    k_se = float(k.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    reward, kl = float(r.mean()), float(k.mean())
    return {
        "reward": reward,
        "reward_ci95": 1.96 * r_se,
        "kl": kl,
        "kl_se": k_se,
        "J": reward - beta * kl,
        "beta": beta,
        "n": float(n),
    }


@dataclass
class PolicyEvaluation:
    """The summary and what it summarises: the samples (prompt-major, both log-probs set) and their rewards."""

    summary: dict[str, float]
    samples: list[GeneratedSample]
    rewards: list[float]


def _check_logprobs(logprobs: object) -> None:
    """Only a `MatchedLogprobs` may set the log-probs: a filler of the reference alone (the training's
    `fill_reference`) would leave the engine's policy log-probs against another code path's reference."""
    if logprobs is not None and not isinstance(logprobs, MatchedLogprobs):
        raise TypeError(
            f"the evaluation's log-probs must be None (the engine returns both) or an engines.kl.MatchedLogprobs, "
            f"got {type(logprobs).__name__}: the KL takes log pi and log pi_ref from the same forward "
            "(docs/interpolation.md, 'The evaluation KL'); on Ray use "
            "engines.scoring.actor_group_logprobs(learner group, reference group)"
        )


def run_policy_evaluation(
    engine,
    logprobs: MatchedLogprobs | None,
    scorer: Scorer | PreferenceOracle,
    tokenizer,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    *,
    beta: float,
    samples_per_prompt: int = 1,
) -> PolicyEvaluation:
    """Sample `samples_per_prompt` responses per prompt at w = 0, set their log-probs, score them, and summarise.

    `engine`: the generation interface. `logprobs`: the `MatchedLogprobs` that recomputes both log-probs (every
    engine of this project); None when the engine returns both from one computation (`params.reference_logprobs`).
    `scorer`: the run's oracle (`PreferenceOracle.score`: checked and retried as for labels) or a bare scorer;
    the wrong count of scores or non-finite ones are refused either way.
    """
    _check_logprobs(logprobs)
    plan = GenerationPlan.grid([p.ids for p in prompts], [0.0] * samples_per_prompt, [p.text for p in prompts])
    samples = engine.generate(plan, params)
    if logprobs is not None:
        logprobs(samples)
    requests = []
    for s in samples:
        p = prompts[s.prompt]
        query = tokenizer.decode(list(p.ids) + list(s.token_ids), skip_special_tokens=False)
        requests.append(ScoreRequest(query, p.text, p.label, p.ids, tuple(s.token_ids)))
    rewards = [float(r) for r in scorer.score(requests)]
    if len(rewards) != len(samples) or not all(math.isfinite(x) for x in rewards):
        raise ValueError(
            f"evaluation: the scorer returned {len(rewards)} scores for {len(samples)} samples, or non-finite ones"
        )
    return PolicyEvaluation(summarize(rewards, kl_terms(samples), beta), list(samples), rewards)
