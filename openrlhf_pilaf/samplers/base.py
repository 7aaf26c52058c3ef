"""The pair-sampler interface and its name registry.

A sampler decides, for each prompt of a step, how many responses to draw at which interpolation weight
w (a `SamplerPlan`: an engine `GenerationPlan` plus one `PromptGroup` per prompt), then turns the
generated samples into one `CandidatePair` per prompt. Every random choice (PILAF's coin, the a/b order)
is made in `plan` from the step's seeded generator, so `pairs` is a pure function of the plan and the
samples: a resumed run that re-plans a step with the same seed gets the same decisions.

Samplers register under a name (`@register_sampler`); registering a name twice is an error, so a plug-in
cannot silently replace a built-in sampler. Each sampler declares its settings itself, as a nested
`Options` dataclass (a `SamplerOptions`: one field per `--pilaf.<option>` flag, with its type, default and
help, validated in its `__post_init__`), and builds itself from them and the DPO beta (`from_options`).
The launcher's `--pilaf.*` flags are generated from the samplers registered when it builds its parser, so
a new sampler is one module that defines the class and registers it; nothing else is edited
(`tests/test_sampler_plugin.py` registers one from outside the package and runs it end to end).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationPlan, SampleSpec
from openrlhf_pilaf.pairs.types import Branch, CandidatePair, Response
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name, option_union

OPTION_GROUP = "pilaf"  # the flag group of every sampler option: `--pilaf.<option>`
# `SamplerConfig`'s own names: `--pilaf.sampler` picks the sampler, `options` is its keyword for the settings.
RESERVED_OPTION_NAMES = frozenset({"sampler", "options"})


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


@dataclass(frozen=True)
class SamplerOptions:
    """The settings of one sampler: subclass it as the sampler's nested `Options` dataclass.

    Each field is a `--pilaf.<field>` flag (types as in `utils.config_cli`; metadata "help" required, and a
    default: a flag the user leaves out must still build the sampler). Two samplers may declare the same
    name when they spell it alike; it is then one flag. Validate in `__post_init__` (call super's: it checks
    `Literal` choices) and name the flag with `self.flag(name)`: the same check then holds from Python and
    from the command line. An option whose default depends on the run (PILAF's w = the DPO beta) defaults
    to None here and is resolved in the sampler's `from_options`.
    """

    cli_group: ClassVar[str] = OPTION_GROUP

    def __post_init__(self) -> None:
        check_choices(self)

    @classmethod
    def flag(cls, name: str) -> str:
        """The flag of one of these options, e.g. `--pilaf.w`, for error messages."""
        return flag_name(cls, name)


class PairSampler(ABC):
    """Maps (prompts, seeded rng) to a plan, and generated samples to one candidate pair per prompt."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # a few words for `--pilaf.sampler`'s help, e.g. "2 policy draws"
    # The sampler's settings (fields = `--pilaf.*` flags); SamplerConfig refuses a setting not declared here.
    Options: ClassVar[type[SamplerOptions]] = SamplerOptions

    @classmethod
    def from_options(cls, options: SamplerOptions, beta: float) -> PairSampler:
        """The sampler for validated `options` and the run's DPO beta (for defaults and implicit rewards).

        Override when the sampler has settings; the default builds a sampler without any.
        """
        return cls()

    @classmethod
    def option_names(cls) -> frozenset[str]:
        """The `--pilaf.*` settings this sampler reads."""
        return frozenset(f.name for f in fields(cls.Options) if f.init)

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


SAMPLERS: dict[str, type[PairSampler]] = {}  # name -> class, in registration order (the order of --help)


def sampler_options() -> dict[str, type[SamplerOptions]]:
    """Each registered sampler's options class, by sampler name: what `--pilaf.*` flags are generated from."""
    return {name: cls.Options for name, cls in SAMPLERS.items()}


def register_sampler(cls: type[PairSampler]) -> type[PairSampler]:
    """Class decorator: make `cls` available as `--pilaf.sampler <cls.name>`, its options as `--pilaf.*` flags.

    Refused here rather than when a launcher builds its parser: a missing or taken name (a plug-in cannot
    silently replace a built-in sampler), an `Options` that is not a `SamplerOptions` dataclass, an option
    without help or default, named `sampler` / `options`, or spelled differently from another sampler's
    option of the same name (they would be one flag).
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a class attribute `name`")
    if name in SAMPLERS:
        raise ValueError(f"sampler name {name!r} is taken by {SAMPLERS[name].__module__}.{SAMPLERS[name].__name__}")
    options = getattr(cls, "Options", None)
    # vars(): a subclass left undecorated inherits is_dataclass, but its annotations would silently be no options
    decorated = isinstance(options, type) and "__dataclass_fields__" in vars(options)
    if not (decorated and issubclass(options, SamplerOptions)):
        raise TypeError(f"{cls.__name__}.Options must be a SamplerOptions subclass decorated with @dataclass")
    option_union({**sampler_options(), name: options}, OPTION_GROUP, RESERVED_OPTION_NAMES)
    SAMPLERS[name] = cls
    return cls


def unregister_sampler(name: str) -> type[PairSampler]:
    """Remove a registered sampler and return its class: for tests and for plug-ins that replace a sampler
    on purpose (unregister, then register theirs). Parsers built afterwards no longer offer its flags."""
    if name not in SAMPLERS:
        raise KeyError(f"no sampler named {name!r} is registered; registered: {sorted(SAMPLERS)}")
    return SAMPLERS.pop(name)
