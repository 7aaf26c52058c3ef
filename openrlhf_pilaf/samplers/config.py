"""`--pilaf.*`: which pair sampler an online / iterative DPO run uses, and its settings.

The settings are not fields of this class: each registered sampler declares its own (its nested
`Options`, `samplers.base`), and `--pilaf.<option>` flags are generated from the samplers registered when
a launcher builds its parser (`utils.config_cli`'s options field), so a plug-in sampler's options are
flags, in `--help`, without editing this module. Here they are the settings *given* (name -> value);
validated at construction, naming the flag: an unknown sampler, a setting the chosen sampler does not
read (`--pilaf.n` with `--pilaf.sampler pilaf` is refused, not ignored), then the sampler's own checks
(N < 2, w <= 0, mix_prob outside [0, 1], ...). Defaults that need the run (PILAF's w = the DPO beta, as
in the paper) are resolved by `build(beta)`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from openrlhf_pilaf.samplers.base import OPTION_GROUP, SAMPLERS, PairSampler, SamplerOptions, sampler_options
from openrlhf_pilaf.utils.config_cli import flag_name


def _sampler_help() -> str:
    listed = ", ".join(f"{name} ({cls.summary})" if cls.summary else name for name, cls in SAMPLERS.items())
    return f"pair sampler: {listed}"


def _sampler_metavar() -> str:
    return "{" + ",".join(sorted(SAMPLERS)) + "}"


@dataclass(init=False)
class SamplerConfig:
    """How each prompt's preference pair is drawn."""

    cli_group: ClassVar[str] = OPTION_GROUP

    # help and metavar are written when a parser is built: they list the samplers registered by then
    sampler: str = field(default="pilaf", metadata={"help": _sampler_help, "metavar": _sampler_metavar})
    options: dict[str, Any] = field(default_factory=dict, metadata={"options": sampler_options})

    def __init__(self, sampler: str = "pilaf", options: Mapping[str, Any] | None = None, **settings: Any) -> None:
        """`SamplerConfig("pilaf", w=0.05)` from Python; `SamplerConfig("pilaf", {"w": 0.05})` is how the
        flags build it. Only the settings given: the chosen sampler's defaults fill in the rest."""
        both = sorted(set(options or {}) & set(settings))
        if both:
            raise TypeError(f"SamplerConfig got {both} both in `options` and as keywords")
        self.sampler = sampler
        self.options = {**(options or {}), **settings}
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{_flag('sampler')} {self.sampler!r} is not a sampler; choose from {sorted(SAMPLERS)}")
        reads = SAMPLERS[self.sampler].option_names()
        for name in self.options:
            if name not in reads:
                raise ValueError(f"{_flag(name)} is not a setting of {_flag('sampler')} {self.sampler}; remove it")
        self.settings()  # the sampler's own checks, now rather than at build

    def settings(self) -> SamplerOptions:
        """The chosen sampler's options: those given, its defaults for the rest (validated)."""
        return SAMPLERS[self.sampler].Options(**self.options)

    def build(self, beta: float) -> PairSampler:
        """The sampler, with defaults resolved (PILAF's w = the DPO beta)."""
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"the DPO beta must be a finite number > 0, got {beta}")
        return SAMPLERS[self.sampler].from_options(self.settings(), beta)


def _flag(name: str) -> str:
    try:
        return flag_name(SamplerConfig, name)
    except KeyError:  # a setting no registered sampler declares (from Python): spelled as its flag would be
        return f"--{OPTION_GROUP}.{name}"
