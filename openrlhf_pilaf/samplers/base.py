"""The pair-sampler interface and its name registry.

A sampler decides, for each prompt of a step, how many responses to draw at which interpolation weight
w (a `SamplerPlan`: an engine `GenerationPlan` plus one `PromptGroup` per prompt), then turns the
generated samples into one `CandidatePair` per prompt. Every random choice (PILAF's coin, the a/b order)
is made in `plan` from the step's seeded generator, so `pairs` is a pure function of the plan and the
samples: a resumed run that re-plans a step with the same seed gets the same decisions.

Samplers register under a name (`@register_sampler`); registering a name twice is an error, so a plug-in
cannot silently replace a built-in sampler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationPlan, SampleSpec
from openrlhf_pilaf.pairs.types import Branch, CandidatePair, Response


@dataclass(frozen=True)
class PromptGroup:
    """The samples of one prompt: their indices in the generation plan, their branches, and the a/b order."""

    prompt_index: int
    sample_indices: tuple[int, ...]
    branches: tuple[Branch, ...]
    swap: bool  # show the pair as (second, first): decided by a coin so position carries no information


@dataclass(frozen=True)
class SamplerPlan:
    generation: GenerationPlan
    groups: tuple[PromptGroup, ...]


def model_forwards(w: float) -> tuple[int, int]:
    """(policy, reference) forwards per token to sample at weight w: the reference is skipped at w = 0, the
    policy at w = -1 (the rows of the method's cost table)."""
    if w == 0:
        return 1, 0
    if w == -1:
        return 0, 1
    return 1, 1


class PairSampler(ABC):
    """Maps (prompts, seeded rng) to a plan, and generated samples to one candidate pair per prompt."""

    name: ClassVar[str]
    # Fields of SamplerConfig this sampler reads (besides `sampler`); the config refuses the others.
    options: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        """The (w, branch) of every response drawn for one prompt, in generation order."""

    def choose(self, responses: Sequence[Response]) -> tuple[int, int]:
        """Which two of a prompt's responses form its pair (indices into `responses`); default: the two drawn."""
        if len(responses) != 2:
            raise ValueError(f"{self.name} draws two responses per prompt, got {len(responses)}")
        return 0, 1

    def plan(self, prompts: Sequence[Sequence[int]], rng: np.random.Generator) -> SamplerPlan:
        specs: list[SampleSpec] = []
        groups: list[PromptGroup] = []
        for p in range(len(prompts)):
            draws = self.draws(rng)
            start = len(specs)
            specs.extend(SampleSpec(p, w) for w, _ in draws)
            groups.append(
                PromptGroup(
                    prompt_index=p,
                    sample_indices=tuple(range(start, len(specs))),
                    branches=tuple(b for _, b in draws),
                    swap=bool(rng.integers(2)),
                )
            )
        return SamplerPlan(GenerationPlan(prompts, specs), tuple(groups))

    def pairs(
        self, plan: SamplerPlan, samples: Sequence[GeneratedSample], *, step: int, pair_ids: Sequence[str]
    ) -> list[CandidatePair]:
        """One pair per prompt group, with `pair_ids[g]` for group g."""
        if len(samples) != len(plan.generation.samples):
            raise ValueError(f"the plan asked for {len(plan.generation.samples)} samples, got {len(samples)}")
        if len(pair_ids) != len(plan.groups):
            raise ValueError(f"{len(plan.groups)} prompt groups but {len(pair_ids)} pair ids")
        out = []
        for group, pair_id in zip(plan.groups, pair_ids, strict=True):
            responses = [
                Response.from_sample(samples[i], b) for i, b in zip(group.sample_indices, group.branches, strict=True)
            ]
            first, second = self.choose(responses)
            if first == second:
                raise ValueError(f"{self.name} chose response {first} twice for pair {pair_id}")
            a, b = (responses[second], responses[first]) if group.swap else (responses[first], responses[second])
            forwards = [model_forwards(samples[i].w) for i in group.sample_indices]
            out.append(
                CandidatePair(
                    pair_id=pair_id,
                    step=step,
                    prompt_index=group.prompt_index,
                    prompt_ids=tuple(plan.generation.prompts[group.prompt_index]),
                    a=a,
                    b=b,
                    policy_forwards=sum(f[0] for f in forwards),
                    reference_forwards=sum(f[1] for f in forwards),
                )
            )
        return out


SAMPLERS: dict[str, type[PairSampler]] = {}


def register_sampler(cls: type[PairSampler]) -> type[PairSampler]:
    """Class decorator: make `cls` available as `--pilaf.sampler <cls.name>`; a taken name is an error."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if name in SAMPLERS:
        raise ValueError(f"sampler name {name!r} is taken by {SAMPLERS[name].__module__}.{SAMPLERS[name].__name__}")
    SAMPLERS[name] = cls
    return cls
