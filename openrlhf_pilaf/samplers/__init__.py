"""Preference-pair samplers for online and iterative DPO: vanilla, best_of_n, hybrid and pilaf.

sampler = SamplerConfig(sampler="pilaf").build(beta=0.1)
plan = sampler.plan(prompt_ids, np.random.default_rng([seed, step]))
samples = engine.generate(plan.generation, GenerationParams(max_new_tokens=128))
pairs = sampler.pairs(plan, samples, step=step, pair_ids=[...])

A new sampler is a `PairSampler` subclass with a `name`, its settings as a nested `Options` dataclass
(a `SamplerOptions`: each field a `--pilaf.<field>` flag) and a `from_options(options, beta)`, passed to
`register_sampler` before the launcher parses its argv (see `samplers.base`).
"""

from openrlhf_pilaf.samplers.base import (
    SAMPLERS,
    PairSampler,
    PromptGroup,
    SamplerOptions,
    SamplerPlan,
    model_forwards,
    register_sampler,
    sampler_options,
    unregister_sampler,
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
    "SamplerOptions",
    "SamplerPlan",
    "VanillaSampler",
    "model_forwards",
    "register_sampler",
    "sampler_options",
    "unregister_sampler",
]
