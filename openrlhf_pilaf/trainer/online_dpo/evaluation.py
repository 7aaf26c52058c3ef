"""Evaluation of a policy on held-out prompts: oracle reward, KL to the reference, and J = reward - beta * KL.

The KL is sequence-level and estimated by Monte Carlo over the policy's own samples (w = 0): the mean
of log pi(y|x) - log pi_ref(y|x), both at temperature 1, with its standard error. The reward is the
oracle scorer's score (not a label), with a 95% normal interval. These are the quantities of the
paper's tables (J = reward - 0.1 * KL there).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.oracle.scorers import Scorer, ScoreRequest
from openrlhf_pilaf.trainer.online_dpo.prompts import Prompt


def summarize(rewards: Sequence[float], kls: Sequence[float], beta: float) -> dict[str, float]:
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


def evaluate_policy(
    engine,
    fill_reference: Callable[[list[GeneratedSample]], None] | None,
    scorer: Scorer,
    tokenizer,
    prompts: Sequence[Prompt],
    params: GenerationParams,
    *,
    beta: float,
    samples_per_prompt: int = 1,
) -> dict[str, float]:
    plan = GenerationPlan.grid([p.ids for p in prompts], [0.0] * samples_per_prompt, [p.text for p in prompts])
    samples = engine.generate(plan, params)  # the training engines fill policy and reference log-probs
    if fill_reference is not None:  # cli.evaluate's offline vLLM engine only samples
        fill_reference(samples)
    requests = []
    for s in samples:
        p = prompts[s.prompt]
        query = tokenizer.decode(list(p.ids) + list(s.token_ids), skip_special_tokens=False)
        requests.append(ScoreRequest(query, p.text, p.label, p.ids, tuple(s.token_ids)))
    rewards = scorer.score(requests)
    if len(rewards) != len(samples) or not all(math.isfinite(x) for x in rewards):
        raise ValueError(
            f"evaluation: the scorer returned {len(rewards)} scores for {len(samples)} samples, or non-finite ones"
        )
    kls = [math.fsum(s.policy_logprobs) - math.fsum(s.reference_logprobs) for s in samples]
    return summarize(rewards, kls, beta)
