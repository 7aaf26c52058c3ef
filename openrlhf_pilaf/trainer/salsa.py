"""SALSA: a model soup as the KL reference of RLHF (Chegini et al., arXiv 2411.01798).

The launcher-facing configuration (`--salsa.*` flags) and the step that turns it into a soup on
the driver, before any Ray actor starts, so every actor reads one finished directory.

A PPO user types `--salsa.*` flags only, so every refusal must name those: `SalsaConfig` checks
what it can at construction (choices, weights, and the `SoupConfig` it will build, whose own
checks then run at once), and the soup builder's later errors (incompatible ingredients, an
occupied output) are re-raised with its `--soup.*` flag names translated.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from openrlhf_pilaf.soup.errors import SoupError
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name

if TYPE_CHECKING:
    from openrlhf_pilaf.soup.config import SoupConfig

# SoupConfig fields a SALSA launch sets from a --salsa.* flag of the same name.
_SHARED_FIELDS = ("ingredients", "weights", "output", "dtype", "allow_pickle")


def default_soup_root() -> Path:
    return Path(os.environ.get("PILAF_SOUP_DIR", Path.home() / ".cache" / "openrlhf_pilaf" / "soups"))


def salsa_soup_error(error: SoupError) -> SoupError:
    """The soup builder's error as a SALSA user must read it: `--soup.X` becomes `--salsa.X`, and
    an error naming no flag (e.g. incompatible checkpoints) is put under `--salsa.ingredients`."""
    text = str(error)
    for name in _SHARED_FIELDS:
        text = re.sub(rf"--soup\.{name}\b", flag_name(SalsaConfig, name), text)
    if "--salsa." not in text:
        text = f"{flag_name(SalsaConfig, 'ingredients')}: {text}"
    return SoupError(text)


@dataclass
class SalsaConfig:
    """SALSA reference: average fine-tuned checkpoints of one base model and use the soup as KL reference."""

    cli_group: ClassVar[str] = "salsa"

    ingredients: list[str] = field(
        default_factory=list,
        metadata={
            "help": "two or more checkpoints of one base model to average into the reference (SALSA off when empty)",
            "metavar": "DIR",
        },
    )
    weights: list[float] | None = field(
        default=None, metadata={"help": "one weight per ingredient (uniform when omitted), normalised to sum 1"}
    )
    init_policy: bool = field(
        default=False, metadata={"help": "also start the policy (and the vLLM engines) from the soup, as the paper"}
    )
    output: str | None = field(
        default=None,
        metadata={
            "help": "where to write the soup; default: $PILAF_SOUP_DIR (or ~/.cache/openrlhf_pilaf/soups)"
            "/<hash of ingredients and weights>",
            "metavar": "DIR",
        },
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = field(
        default="auto", metadata={"help": "dtype of the soup's tensors; auto keeps the ingredients' dtype"}
    )
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "accept ingredients stored only as pickled PyTorch .bin files (loaded with weights_only=True)"
        },
    )

    def __post_init__(self) -> None:
        check_choices(self)
        self.ingredients = [str(p) for p in self.ingredients]
        if self.ingredients and len(self.ingredients) < 2:
            raise ValueError("--salsa.ingredients needs at least two checkpoints to average")
        if not self.ingredients and (self.weights or self.init_policy or self.output or self.allow_pickle):
            raise ValueError("--salsa.weights/init_policy/output/allow_pickle are set but --salsa.ingredients is empty")
        if self.weights is not None:
            self._check_weights()
        if self.output is not None and not str(self.output):
            raise ValueError("--salsa.output: empty path (omit the flag for the default soup directory)")
        if self.enabled:
            self.soup_config()  # runs the soup's own checks now, under --salsa.* names

    def _check_weights(self) -> None:
        """SALSA averages: every weight finite and >= 0, not all 0 (the soup normalises them to sum 1)."""
        self.weights = [float(w) for w in self.weights]
        if len(self.weights) != len(self.ingredients):
            raise ValueError(
                f"--salsa.weights has {len(self.weights)} values for {len(self.ingredients)} --salsa.ingredients"
            )
        for i, (w, path) in enumerate(zip(self.weights, self.ingredients, strict=True)):
            if not math.isfinite(w) or w < 0:
                raise ValueError(
                    f"--salsa.weights: weight {w} of ingredient {i + 1} ({path}) must be finite and >= 0 "
                    "(a SALSA reference is an average of its ingredients)"
                )
        if not any(self.weights):
            raise ValueError(f"--salsa.weights: all weights are 0 ({self.weights}); at least one must be > 0")

    @property
    def enabled(self) -> bool:
        return bool(self.ingredients)

    def soup_output(self) -> Path:
        if self.output:
            return Path(self.output)
        key = json.dumps([[str(Path(p).resolve()) for p in self.ingredients], self.weights, self.dtype])
        return default_soup_root() / hashlib.sha256(key.encode()).hexdigest()[:16]

    def soup_config(self) -> SoupConfig:
        """The soup this SALSA reference is; SoupError naming `--salsa.*` flags if it is not valid."""
        from openrlhf_pilaf.soup.config import SoupConfig

        if not self.enabled:
            raise ValueError("--salsa.ingredients is empty: SALSA is off and there is no soup to build")
        try:
            return SoupConfig(
                ingredients=list(self.ingredients),
                output=str(self.soup_output()),
                weights=self.weights,
                dtype=self.dtype,
                allow_pickle=self.allow_pickle,
            )
        except SoupError as e:
            raise salsa_soup_error(e) from None

    def build(self) -> Path:
        """Build the soup (or reuse an identical one) and return its directory."""
        from openrlhf_pilaf.soup.builder import build_soup

        config = self.soup_config()
        try:
            return build_soup(config)
        except SoupError as e:
            raise salsa_soup_error(e) from None
