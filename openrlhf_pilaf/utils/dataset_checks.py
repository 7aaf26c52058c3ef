"""A prompt dataset a launch can use, or a refusal naming the flag: checked once, when the rows are read.

Why: OpenRLHF's `blending_datasets` and `PromptDataset` fail on a user's data with whatever the layer
below raised: `KeyError: 'input'` from `preprocess_data` when `--data.input_key` names no column,
`AttributeError: 'DatasetDict' object has no attribute 'select'` for a split the data lacks,
`StopIteration` for an empty file, a bare `AssertionError` for a `--data.prompt_probs` of the wrong
length. Every launcher reads its prompts through `load_rows` and `check_row_keys` instead, before any
engine starts, so that each of those is one line (`error: --data.input_key 'input': ...`, exit 2)
naming the flag, and for a key the keys the rows do have.

`load_rows` is OpenRLHF's `blending_datasets` (same paths, `path@data_dir`, splits, blending), with
its inputs checked first and its failures translated; `check_row_keys` checks every key flag against
the loaded rows (a missing column, and for the prompt key rows without a prompt or with a value that
is no prompt text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openrlhf_pilaf.utils.model_limits import looks_like_hub_id

# blending_datasets reads these extensions as local data files (anything else: a directory or a hub id).
DATA_FILE_EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet", ".arrow")
ROWS_SHOWN = 5  # row numbers listed in a message before "..."


class DatasetError(ValueError):
    """A dataset flag (or a key flag) the user must change; the message names it."""


@dataclass(frozen=True)
class DatasetSource:
    """One dataset flag as the user gave it, with the flags that choose its split and blending."""

    flag: str  # e.g. --data.prompt_dataset
    value: str  # comma-separated paths or hub ids, each optionally `path@data_dir`
    split_flag: str
    split: str
    probs_flag: str | None = None
    probs: str | None = None

    @property
    def parts(self) -> list[str]:
        return [p.split("@")[0].strip() for p in self.value.split(",")]


def check_dataset_paths(source: DatasetSource) -> None:
    """Refuse, before anything is read: a local file that does not exist or is empty, an empty name, bad probs."""
    for part in source.parts:
        if not part:
            raise DatasetError(f"{source.flag} {source.value!r}: an empty name in the comma-separated list")
        path = Path(part).expanduser()
        if path.exists():
            if path.is_file() and path.stat().st_size == 0:
                raise DatasetError(f"{source.flag} {part!r} is an empty file (no rows)")
            continue
        if path.suffix.lower() in (*DATA_FILE_EXTENSIONS, ".py") or not looks_like_hub_id(part):
            raise DatasetError(f"{source.flag} {part!r}: no such file or directory")
    if source.probs is None:
        return
    try:
        probs = [float(p) for p in source.probs.split(",")]
    except ValueError:
        raise DatasetError(f"{source.probs_flag} {source.probs!r} must be comma-separated numbers") from None
    if len(probs) != len(source.parts):
        raise DatasetError(
            f"{source.probs_flag} has {len(probs)} values for {len(source.parts)} "
            f"dataset{'s' if len(source.parts) != 1 else ''} in {source.flag}; "
            "give one probability per dataset"
        )
    if any(not (p >= 0) or p == float("inf") for p in probs) or sum(probs) <= 0:
        raise DatasetError(f"{source.probs_flag} {source.probs!r}: probabilities must be finite, >= 0, not all 0")


def _cause(error: BaseException) -> str:
    """The error and, for `datasets`' generic wrappers ("An error occurred while generating ..."), its cause."""
    text = f"{type(error).__name__}: {error}"
    if error.__cause__ is not None:
        text += f" ({type(error.__cause__).__name__}: {error.__cause__})"
    return text


def driver_strategy(args: Any, print_fn: Any = print) -> SimpleNamespace:
    """What OpenRLHF's dataset code (blending_datasets, PromptDataset) reads of a strategy: its `args`, `print`
    and `is_rank_0`. A launcher reads datasets on the driver, before any DeepSpeed strategy exists: rank 0."""
    return SimpleNamespace(args=args, print=print_fn, is_rank_0=lambda: True)


def load_rows(source: DatasetSource, strategy: Any, *, max_samples: int, seed: int):
    """OpenRLHF's `blending_datasets(...)` of `source`, or DatasetError naming the flag; never an empty dataset.

    `strategy`: what blending_datasets calls (`print`, `is_rank_0`, `args.use_ms`), a launcher's or a stand-in.
    """
    from datasets.exceptions import DatasetsError
    from openrlhf.datasets.utils import blending_datasets

    check_dataset_paths(source)
    try:
        data = blending_datasets(
            source.value, source.probs, strategy, seed, max_count=max_samples, dataset_split=source.split
        )
    except AttributeError as e:
        if "DatasetDict" not in str(e):
            raise
        # blending_datasets keeps the DatasetDict when it has no `dataset_split` and then calls .select on it.
        raise DatasetError(
            f"{source.split_flag} {source.split!r}: {source.flag} {source.value!r} has no such split (a local "
            "JSON/JSONL/CSV/Parquet file has one split, 'train')"
        ) from None
    except (OSError, ValueError, StopIteration, DatasetsError) as e:
        raise DatasetError(f"{source.flag} {source.value!r}: cannot read it as a dataset: {_cause(e)}") from None
    data = data.select(range(min(max_samples, len(data))))
    if len(data) == 0:
        raise DatasetError(f"{source.flag} {source.value!r} has no rows (split {source.split!r})")
    return data


def _rows(indices: list[int]) -> str:
    """Row numbers as a message says them, counting from 0: `row 3`, or `rows 3, 7, ... (12 rows)`."""
    shown = ", ".join(str(i) for i in indices[:ROWS_SHOWN])
    more = f", ... ({len(indices)} rows)" if len(indices) > ROWS_SHOWN else ""
    return f"{'row' if len(indices) == 1 else 'rows'} {shown}{more} (counting from 0)"


def check_row_keys(
    data, keys: Mapping[str, str | None], *, source: DatasetSource, prompt_flag: str | None = None
) -> None:
    """Every key flag ({flag: key, None when not given}) names a column of `data`; the prompt key's values are text.

    `prompt_flag`: the flag among `keys` whose column holds the prompt (a string, or a list of chat messages):
    rows without one, or with another kind of value, are refused with their row numbers.
    """
    columns = list(data.column_names)
    missing = [(flag, key) for flag, key in keys.items() if key is not None and key not in columns]
    if missing:
        names = ", ".join(f"{flag} {key!r}" for flag, key in missing)
        raise DatasetError(
            f"{names}: no such key in the rows of {source.flag} {source.value!r}; their keys: "
            f"{', '.join(repr(c) for c in columns) or '(none)'}"
        )
    key = keys.get(prompt_flag) if prompt_flag is not None else None
    if key is None:
        return
    empty, wrong = [], []
    for i, value in enumerate(data[key]):
        if value is None or (isinstance(value, str) and not value.strip()):
            empty.append(i)
        elif not isinstance(value, (str, list)):
            wrong.append(i)
    where = f"{prompt_flag} {key!r} of {source.flag} {source.value!r}"
    if empty:
        raise DatasetError(f"{where}: {_rows(empty)} without a prompt under that key")
    if wrong:
        example = data[wrong[0]][key]
        raise DatasetError(
            f"{where}: {_rows(wrong)} with {type(example).__name__} values such as {example!r}, not prompt text "
            "(a string, or a list of chat messages)"
        )
