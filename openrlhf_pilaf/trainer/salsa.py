"""SALSA: a model soup as the KL reference of RLHF (Chegini et al., arXiv 2411.01798).

The launcher-facing configuration (`--salsa.*` flags) and the step that turns it into a soup on
the driver, before any Ray actor starts, so every actor reads one finished directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal


def default_soup_root() -> Path:
    return Path(os.environ.get("PILAF_SOUP_DIR", Path.home() / ".cache" / "openrlhf_pilaf" / "soups"))


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

    def __post_init__(self) -> None:
        if self.ingredients and len(self.ingredients) < 2:
            raise ValueError("--salsa.ingredients needs at least two checkpoints to average")
        if not self.ingredients and (self.weights or self.init_policy or self.output):
            raise ValueError("--salsa.weights/init_policy/output are set but --salsa.ingredients is empty")
        if self.weights is not None and len(self.weights) != len(self.ingredients):
            raise ValueError(
                f"--salsa.weights has {len(self.weights)} values for {len(self.ingredients)} --salsa.ingredients"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.ingredients)

    def soup_output(self) -> Path:
        if self.output:
            return Path(self.output)
        key = json.dumps([[str(Path(p).resolve()) for p in self.ingredients], self.weights, self.dtype])
        return default_soup_root() / hashlib.sha256(key.encode()).hexdigest()[:16]

    def build(self) -> Path:
        """Build the soup (or reuse an identical one) and return its directory."""
        from openrlhf_pilaf.soup import SoupConfig, build_soup

        return build_soup(
            SoupConfig(
                ingredients=list(self.ingredients),
                output=str(self.soup_output()),
                weights=self.weights,
                dtype=self.dtype,
            )
        )
