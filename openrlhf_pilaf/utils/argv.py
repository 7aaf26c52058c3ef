"""Reading and rewriting flags in an argv list that another program's argparse will parse.

Our launchers take their own `--salsa.*` / `--pilaf.*` flags and hand the rest to OpenRLHF's CLI
unchanged, except where a value must be redirected (e.g. the policy path to a soup). Both argparse
spellings, `--flag value` and `--flag=value`, are handled.
"""

from __future__ import annotations

from collections.abc import Sequence


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """The last value given for `flag`, or None if it is absent (argparse keeps the last one too)."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag:
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} is given without a value")
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
    return value


def without_flag(argv: Sequence[str], flag: str) -> list[str]:
    """A copy of argv with every occurrence of `flag` and its value dropped (both spellings)."""
    out: list[str] = []
    skip = False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == flag:
            if i + 1 >= len(argv):
                raise ValueError(f"{flag} is given without a value")
            skip = True
            continue
        if arg.startswith(flag + "="):
            continue
        out.append(arg)
    return out


def with_flag_value(argv: Sequence[str], flag: str, value: str) -> list[str]:
    """A copy of argv in which every occurrence of `flag` is dropped and `flag value` appended."""
    return [*without_flag(argv, flag), flag, value]
