"""`SoupConfig`: what a SALSA soup is made of, and the checks that need no file access."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from openrlhf_pilaf.soup.errors import SoupError
from openrlhf_pilaf.utils.checks import is_int
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name

SoupDtype = Literal["auto", "bf16", "fp16", "fp32"]

# 8M elements: 32 MB per fp32 buffer. Large enough that per-chunk Python overhead is noise, small
# enough that the builder's six chunk buffers stay far below any checkpoint's size.
DEFAULT_CHUNK_ELEMS = 8 * 1024 * 1024

# Units as Hugging Face spells shard sizes ("5GB" is 5 * 10**9 bytes, "5GiB" is 5 * 2**30).
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """Bytes from an int or a string such as "5GB", "500MB", "2GiB" or "1048576"."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ValueError(f"cannot read {text!r} as a size (examples: 5GB, 500MB, 2GiB, 1048576)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def _flag(name: str) -> str:
    return flag_name(SoupConfig, name)


@dataclass
class SoupConfig:
    """A SALSA model soup: the weighted element-wise average of K >= 2 checkpoints of one base model."""

    cli_group: ClassVar[str] = "soup"

    ingredients: list[str] = field(
        metadata={
            "help": "two or more Hugging Face checkpoint directories (same architecture, tokenizer and tensor shapes)",
            "aliases": ("--ingredients",),
            "metavar": "DIR",
        }
    )
    output: str = field(
        metadata={
            "help": "directory to write the soup to; it must not exist, be empty, or already hold a soup of the "
            "same inputs (which is then reused)",
            "aliases": ("--output",),
            "metavar": "DIR",
        }
    )
    weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "one weight per ingredient, in the same order; uniform when omitted. Normalised to sum to 1 "
            "unless --soup.no_normalize",
            "aliases": ("--weights",),
            "metavar": "W",
        },
    )
    dtype: SoupDtype = field(
        default="auto",
        metadata={
            "help": "dtype of the written floating tensors; auto keeps each tensor's dtype in the ingredients "
            "(the sums are always accumulated in fp32 or wider)",
            "aliases": ("--dtype",),
        },
    )
    no_normalize: bool = field(
        default=False,
        metadata={
            "help": "use the weights as given instead of dividing them by their sum",
            "aliases": ("--no-normalize",),
        },
    )
    allow_negative: bool = field(
        default=False,
        metadata={
            "help": "accept negative weights (extrapolation rather than a soup)",
            "aliases": ("--allow-negative",),
        },
    )
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "accept ingredients stored only as pickled PyTorch .bin files (loaded with weights_only=True)",
            "aliases": ("--allow-pickle",),
        },
    )
    max_shard_size: str = field(
        default="5GB",
        metadata={
            "help": "largest safetensors shard to write (HF units: 5GB = 5e9 bytes, 2GiB = 2**31 bytes); memory use "
            "does not depend on it",
            "aliases": ("--max-shard-size",),
            "metavar": "SIZE",
        },
    )

    chunk_elems: int = field(
        default=DEFAULT_CHUNK_ELEMS,
        metadata={
            "help": "elements the builder reads, averages and writes at a time: peak memory is about 24 bytes per "
            "element (six fp32 buffers); the output bytes do not depend on it",
            "metavar": "N",
        },
    )

    def __post_init__(self) -> None:
        try:
            check_choices(self)
        except ValueError as e:
            raise SoupError(str(e)) from None
        self.ingredients = [str(p) for p in self.ingredients]
        if len(self.ingredients) < 2:
            raise SoupError(f"{_flag('ingredients')}: a soup needs at least 2 ingredients, got {len(self.ingredients)}")
        if any(not p for p in self.ingredients):
            raise SoupError(f"{_flag('ingredients')}: empty path")
        if not str(self.output):
            raise SoupError(f"{_flag('output')}: empty path")
        self.output = str(self.output)
        try:
            shard_bytes = parse_size(self.max_shard_size)
        except ValueError as e:
            raise SoupError(f"{_flag('max_shard_size')}: {e}") from None
        if shard_bytes <= 0:
            raise SoupError(f"{_flag('max_shard_size')}: must be positive, got {self.max_shard_size!r}")
        if not is_int(self.chunk_elems, min=1):
            raise SoupError(f"{_flag('chunk_elems')}: must be a positive integer, got {self.chunk_elems!r}")
        self._check_weights()
        self._check_paths()

    def _check_weights(self) -> None:
        if self.weights is None:
            return
        self.weights = [float(w) for w in self.weights]
        if len(self.weights) != len(self.ingredients):
            raise SoupError(
                f"{_flag('weights')}: {len(self.weights)} weights for {len(self.ingredients)} ingredients; "
                "give one weight per ingredient"
            )
        for i, (w, path) in enumerate(zip(self.weights, self.ingredients, strict=True)):
            if not math.isfinite(w):
                raise SoupError(f"{_flag('weights')}: weight {w} of ingredient {i + 1} ({path}) is not finite")
            if w < 0 and not self.allow_negative:
                raise SoupError(
                    f"{_flag('weights')}: weight {w} of ingredient {i + 1} ({path}) is negative; "
                    f"pass {_flag('allow_negative')} if you mean to extrapolate"
                )
        total = math.fsum(self.weights)
        if math.isclose(total, 0.0, abs_tol=1e-12):
            raise SoupError(f"{_flag('weights')}: the weights sum to zero ({self.weights}); a soup needs a nonzero sum")
        if total < 0 and not self.no_normalize:
            raise SoupError(
                f"{_flag('weights')}: the weights sum to {total} < 0; normalising would flip every sign "
                f"(pass {_flag('no_normalize')} to use them as given)"
            )

    def _check_paths(self) -> None:
        out = Path(self.output).resolve()
        for i, p in enumerate(self.ingredients):
            src = Path(p).resolve()
            if out == src or src in out.parents or out in src.parents:
                raise SoupError(
                    f"{_flag('output')}: {out} overlaps ingredient {i + 1} ({src}); write the soup somewhere else"
                )

    @property
    def max_shard_bytes(self) -> int:
        return parse_size(self.max_shard_size)

    @property
    def arithmetic(self) -> tuple[tuple[float, ...], float]:
        """(w, d) such that the soup is (sum_i w_i * theta_i) / d, computed in that order.

        Dividing once at the end, as mergekit's linear merge does, keeps a uniform average of
        bf16 checkpoints correctly rounded: multiplying by a rounded 1/3 first tips exact ties of
        (a + b + c) / 3 the wrong way (~0.3% of elements measured). Equal weights are replaced by
        ones, so weights [2, 2, 2] and the default make the same bytes (and the same recipe).
        """
        raw = [float(w) for w in self.weights] if self.weights is not None else [1.0] * len(self.ingredients)
        if self.no_normalize:
            return tuple(raw), 1.0
        if len(set(raw)) == 1:
            raw = [1.0] * len(raw)
        return tuple(raw), math.fsum(raw)

    @property
    def effective_weights(self) -> tuple[float, ...]:
        """The coefficients c_i of theta_soup = sum_i c_i * theta_i (recorded for people to read)."""
        weights, divisor = self.arithmetic
        return tuple(w / divisor for w in weights)
