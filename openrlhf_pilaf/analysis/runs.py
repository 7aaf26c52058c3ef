"""One run directory -> one `RunCurve`: its evaluations (eval.jsonl) and who ran it (config.json).

The launcher (`trainer/online_dpo/run.py` and `sinks.py`) appends one JSON object per evaluation to
`eval.jsonl` (non-finite numbers written as null) and writes the run's configuration to `config.json`.
A comparison plot is only as trustworthy as what it read, so everything unexpected is refused with a
`RunDirError` naming the directory (and the file and line), never skipped: a half-read run would
draw a plausible but wrong curve.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from openrlhf_pilaf.utils.checks import is_int, is_real

T = TypeVar("T")

#: The numbers of one evaluation that a curve keeps (besides "step", and "round" in iterative mode).
POINT_FIELDS: tuple[str, ...] = ("pairs_labelled", "labels_spent", "reward", "reward_ci95", "kl", "kl_se", "J")

NO_EVAL_HINT = "the run made no evaluation: give --eval.steps and --eval.dataset"


class RunDirError(ValueError):
    """A run directory that cannot be read into a curve; the message names the directory."""


@dataclass
class RunCurve:
    """The evaluations of one run, in step order, with what tells it apart from the runs beside it.

    `points` are dicts with "step", every key of `POINT_FIELDS` (None where the record had null or
    nothing) and "round" (None outside iterative mode).
    """

    run_dir: Path
    label: str
    sampler: str
    seed: int
    mode: str = "online"
    points: list[dict[str, Any]] = field(default_factory=list)

    def column(self, name: str) -> list[float]:
        """One field over the points, as floats with NaN for a missing value (matplotlib draws a gap)."""
        if name not in ("step", "round", *POINT_FIELDS):
            raise KeyError(f"no column {name!r}; choose among step, round, {', '.join(POINT_FIELDS)}")
        return [math.nan if p.get(name) is None else float(p[name]) for p in self.points]

    def has_finite(self, x: str, y: str) -> bool:
        """Whether at least one point has both `x` and `y` finite (else the run draws nothing there)."""
        return any(math.isfinite(a) and math.isfinite(b) for a, b in zip(self.column(x), self.column(y), strict=True))


def _is_number_or_null(value: Any) -> bool:
    return value is None or is_real(value, finite=False)


def _read_points(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "eval.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no eval.jsonl ({NO_EVAL_HINT})")
    by_key: dict[tuple[int, int], dict[str, Any]] = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise RunDirError(f"{run_dir}: malformed line {where}: {e.msg}") from None
            if not isinstance(record, dict):
                raise RunDirError(f"{run_dir}: {where} is not a JSON object")
            if not is_int(record.get("step")) or record["step"] < 0:
                raise RunDirError(f"{run_dir}: {where} has no integer step >= 0 (got {record.get('step')!r})")
            round_ = record.get("round")
            if round_ is not None and not is_int(round_):
                raise RunDirError(f"{run_dir}: {where}: round must be an integer, got {round_!r}")
            point: dict[str, Any] = {"step": record["step"], "round": round_}
            for name in POINT_FIELDS:
                value = record.get(name)
                if not _is_number_or_null(value):
                    raise RunDirError(f"{run_dir}: {where}: {name} must be a number or null, got {value!r}")
                point[name] = value
            # A resumed run evaluates the step it resumed from again: the later record is the one that
            # the rest of the run continued from, so it replaces the earlier one.
            by_key[(round_ if round_ is not None else 0, record["step"])] = point
    if not by_key:
        raise RunDirError(f"{run_dir}: eval.jsonl is empty ({NO_EVAL_HINT})")
    return [by_key[k] for k in sorted(by_key)]


def config_entry(config: dict, run_dir: Path, group: str, key: str, error: type[ValueError] = RunDirError) -> Any:
    """`config[group][key]` of a run's config.json, or `error` naming the directory."""
    entry = config.get(group)
    if not isinstance(entry, dict) or key not in entry:
        raise error(f"{run_dir}: config.json has no {group}.{key} (was it written by the online DPO launcher?)")
    return entry[key]


def read_config(run_dir: Path, error: type[ValueError] = RunDirError) -> dict[str, Any]:
    """A run's config.json as a dict, or `error` naming the directory (and the line of a malformed file)."""
    path = run_dir / "config.json"
    if not path.is_file():
        raise error(f"{run_dir}: no config.json (the launcher writes it when the run starts)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise error(f"{run_dir}: malformed {path}:{e.lineno}: {e.msg}") from None
    if not isinstance(config, dict):
        raise error(f"{run_dir}: {path} is not a JSON object")
    return config


def load_run(run_dir: str | Path) -> RunCurve:
    """Read `run_dir`'s eval.jsonl and config.json; refuse (RunDirError) what cannot be read faithfully."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    config = read_config(run_dir)
    sampler = config_entry(config, run_dir, "pilaf", "sampler")
    seed = config_entry(config, run_dir, "train", "seed")
    if not isinstance(sampler, str) or not sampler:
        raise RunDirError(f"{run_dir}: config.json pilaf.sampler must be a name, got {sampler!r}")
    if not is_int(seed):
        raise RunDirError(f"{run_dir}: config.json train.seed must be an integer, got {seed!r}")
    dpo = config.get("dpo")
    # Runs from before iterative mode existed have no dpo.mode: they were online.
    mode = dpo.get("mode", "online") if isinstance(dpo, dict) else "online"
    if not isinstance(mode, str):
        raise RunDirError(f"{run_dir}: config.json dpo.mode must be a name, got {mode!r}")
    points = _read_points(run_dir)
    label = f"{sampler} seed {seed}" + ("" if mode == "online" else f" ({mode})")
    return RunCurve(run_dir=run_dir, label=label, sampler=sampler, seed=seed, mode=mode, points=points)


def load_each_once(
    run_dirs: Iterable[str | Path], load: Callable[[str | Path], T], error: type[ValueError], why: str
) -> list[T]:
    """`load` for each directory, in the order given; a directory given twice (under any spelling) is refused
    with `error`, saying `why` that matters."""
    seen: dict[Path, str | Path] = {}
    loaded = []
    for run_dir in run_dirs:
        resolved = Path(run_dir).resolve()
        if resolved in seen:
            raise error(f"{run_dir}: given twice (also as {seen[resolved]}); {why}")
        seen[resolved] = run_dir
        loaded.append(load(run_dir))
    return loaded


def load_runs(run_dirs: Iterable[str | Path]) -> list[RunCurve]:
    """`load_run` for each directory, in the order given; a directory given twice is refused."""
    return load_each_once(run_dirs, load_run, RunDirError, "each run would be drawn twice")
