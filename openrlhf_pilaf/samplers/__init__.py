"""Preference-pair samplers for online and iterative DPO: vanilla, best_of_n, hybrid and pilaf.

sampler = SamplerConfig(sampler="pilaf").build(beta=0.1)
plan = sampler.plan(prompt_ids, np.random.default_rng([seed, step]))
samples = engine.generate(plan.generation, GenerationParams(max_new_tokens=128))
pairs = sampler.pairs(plan, samples, step=step, pair_ids=[...])
"""

from openrlhf_pilaf.samplers.base import (
    SAMPLERS,
    PairSampler,
    PromptGroup,
    SamplerPlan,
    model_forwards,
    register_sampler,
)
from openrlhf_pilaf.samplers.builtin import BestOfNSampler, HybridSampler, PilafSampler, VanillaSampler
from openrlhf_pilaf.samplers.config import SamplerConfig

__all__ = [
    "SAMPLERS",
    "BestOfNSampler",
    "HybridSampler",
    "PairSampler",
    "PilafSampler",
    "PromptGroup",
    "SamplerConfig",
    "SamplerPlan",
    "VanillaSampler",
    "model_forwards",
    "register_sampler",
]
