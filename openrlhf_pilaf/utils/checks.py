"""The one number check: "an int (>= N)" / "a finite real (in range)", never a bool.

`True` is an `int` in Python, so `isinstance(v, int)` alone lets `--x True`-style mistakes from Python
code through; every check here refuses bools. Integers are Python ints (a NumPy int in a config would be
written to config.json as a string), or any `numbers.Integral` with `integral=True` (the sampling ops take
NumPy ints); reals are any `numbers.Real` (Python and NumPy floats, ints).

- `is_int` / `is_real`: the predicates, for callers whose message is their own (a custom error class, a
  message promised elsewhere).
- `check_int` / `check_float`: raise `error` (ValueError by default) naming `flag`, return the value:

      check_int(v, "--train.batch_size", min=1)   # --train.batch_size must be an integer >= 1, got 0
      check_int(v, "sft_seed", allow_none=True)   # sft_seed must be an integer or None, got 1.5
      check_float(v, "--dpo.beta", min=0, min_exclusive=True)
          # 'x' or nan: --dpo.beta must be a finite number, got 'x'
          # 0:          --dpo.beta must be > 0, got 0

A float outside its range is told the bound it broke (the lower one first), as the launchers always did.
Stdlib only: ops, engines and configs import it.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["bounds_text", "check_float", "check_int", "is_int", "is_real"]


def is_int(value: object, *, min: int | None = None, max: int | None = None, integral: bool = False) -> bool:
    """A Python int (not a bool; `integral`: any numbers.Integral) in [min, max] (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integral else int):
        return False
    return (min is None or value >= min) and (max is None or value <= max)


def _in_range(value, low, high, low_open: bool, high_open: bool) -> bool:
    above = low is None or (value > low if low_open else value >= low)
    below = high is None or (value < high if high_open else value <= high)
    return above and below


def is_real(
    value: object,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    finite: bool = True,
) -> bool:
    """A real number (not a bool), finite unless `finite=False`, within the bounds given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    if finite and not math.isfinite(value):
        return False
    return _in_range(value, min, max, min_exclusive, max_exclusive)


def bounds_text(
    min: float | None = None,
    max: float | None = None,
    *,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
) -> str:
    """The bounds in words: ">= 1", "< 0.5", "in (0, 1]", or "" when there is none."""
    if min is not None and max is not None:
        return f"in {'(' if min_exclusive else '['}{min}, {max}{')' if max_exclusive else ']'}"
    if min is not None:
        return f"{'>' if min_exclusive else '>='} {min}"
    if max is not None:
        return f"{'<' if max_exclusive else '<='} {max}"
    return ""


def check_int(
    value: object,
    flag: str,
    *,
    min: int | None = None,
    max: int | None = None,
    allow_none: bool = False,
    integral: bool = False,
    error: type[Exception] = ValueError,
) -> int | None:
    """`value` if it is an int (not a bool; see `is_int`) in [min, max] (or None with `allow_none`); else `error`:
    "<flag> must be an integer >= 1, got 0" ("... in [0, 3] ...", "... an integer or None ...")."""
    if value is None and allow_none:
        return None
    if not is_int(value, min=min, max=max, integral=integral):
        bounds = bounds_text(min, max)
        expected = "an integer" + (f" {bounds}" if bounds else "") + (" or None" if allow_none else "")
        raise error(f"{flag} must be {expected}, got {value!r}")
    return value


def check_float(
    value: object,
    flag: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    finite: bool = True,
    error: type[Exception] = ValueError,
) -> float:
    """`float(value)` if it is a real number (not a bool), finite unless `finite=False`, within the bounds;
    else `error`: "<flag> must be a finite number, got 'x'" (wrong type, NaN or inf), or the bound it
    breaks, the lower one first: "<flag> must be > 0, got 0", "<flag> must be <= 1, got 2"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (finite and not math.isfinite(value)):
        raise error(f"{flag} must be {'a finite number' if finite else 'a number'}, got {value!r}")
    if min is not None and not _in_range(value, min, None, min_exclusive, False):
        raise error(f"{flag} must be {bounds_text(min, min_exclusive=min_exclusive)}, got {value}")
    if max is not None and not _in_range(value, None, max, False, max_exclusive):
        raise error(f"{flag} must be {bounds_text(max=max, max_exclusive=max_exclusive)}, got {value}")
    return float(value)
