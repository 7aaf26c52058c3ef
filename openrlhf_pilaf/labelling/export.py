"""Writing a round's candidate pairs out for human labelling, blind.

A labeller must not be able to tell which sampler branch (or interpolation weight) produced which
response: if branch 1 were always shown as "a", or rows came out grouped by sampler, a labeller's
position habits would leak into the preference data as a branch effect. So each pair's a/b are swapped
by a seeded coin (:func:`display_swap`), rows are shuffled by a seeded permutation, and only the four
display keys are written. Both are seeded so a re-run writes byte-identical files and the import can
undo the swap without storing it anywhere the labeller could read.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from openrlhf_pilaf.labelling.label_studio import make_task
from openrlhf_pilaf.utils.atomic_io import write_text_atomic

TO_LABEL_FILENAME = "to_label.jsonl"
LABEL_STUDIO_TASKS_FILENAME = "label_studio_tasks.json"
DISPLAY_KEYS = ("pair_id", "prompt", "response_a", "response_b")

# Stream tags keep these draws independent of other per-pair generators seeded with (seed, pair_id),
# such as the simulated oracle's: the display coin must not be correlated with anything about the pair.
_SWAP_STREAM = 0x5A4B_0001
_ORDER_STREAM = 0x5A4B_0002


def stable_hash(text: str) -> int:
    """A 64-bit hash of ``text`` that is the same in every process (Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def display_swap(seed: int, pair_id: str) -> bool:
    """True when the pair is shown with response_a and response_b swapped.

    One fair coin per (seed, pair_id), independent of the other pairs in the file, so the export and a
    later import in another process agree without storing the coin.
    """
    return bool(np.random.default_rng([int(seed), stable_hash(pair_id), _SWAP_STREAM]).random() < 0.5)


def _check_candidates(candidates: Sequence[Mapping[str, Any]]) -> None:
    seen: set[str] = set()
    for i, cand in enumerate(candidates):
        if not isinstance(cand, Mapping):
            raise ValueError(f"candidate {i} is a {type(cand).__name__}, not a mapping")
        for key in DISPLAY_KEYS:
            if not isinstance(cand.get(key), str):
                raise ValueError(f"candidate {i} needs a string {key!r}, got {type(cand.get(key)).__name__}")
        if not cand["pair_id"]:
            raise ValueError(f"candidate {i} has an empty pair_id")
        if cand["pair_id"] in seen:
            raise ValueError(f"pair_id {cand['pair_id']!r} appears more than once among the candidates")
        seen.add(cand["pair_id"])


def displayed_rows(candidates: Iterable[Mapping[str, Any]], *, seed: int) -> list[dict[str, str]]:
    """The rows a labeller sees: the four display keys only, a/b swapped per :func:`display_swap`, in a
    seeded shuffled order. Private fields of the candidates are never copied."""
    cands = list(candidates)
    _check_candidates(cands)
    # The ids enter the seed so that two rounds of one run (same seed, same size) are not shuffled alike.
    ids_hash = stable_hash("\n".join(sorted(c["pair_id"] for c in cands)))
    order = np.random.default_rng([int(seed), _ORDER_STREAM, ids_hash]).permutation(len(cands))
    rows = []
    for i in order:
        cand = cands[int(i)]
        a, b = cand["response_a"], cand["response_b"]
        if display_swap(seed, cand["pair_id"]):
            a, b = b, a
        rows.append({"pair_id": cand["pair_id"], "prompt": cand["prompt"], "response_a": a, "response_b": b})
    return rows


def write_to_label(candidates: Iterable[Mapping[str, Any]], path: str | os.PathLike, *, seed: int) -> int:
    """Write ``to_label.jsonl`` (one ``{"pair_id", "prompt", "response_a", "response_b"}`` object per
    line, displayed order) atomically; returns the number of rows."""
    rows = displayed_rows(candidates, seed=seed)
    write_text_atomic(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return len(rows)


def write_label_studio_tasks(candidates: Iterable[Mapping[str, Any]], path: str | os.PathLike, *, seed: int) -> int:
    """Write the same rows as a JSON array of Label Studio tasks ``{"data": {...}}`` (the format its
    "Import" accepts) atomically; returns the number of tasks."""
    tasks = [make_task(row) for row in displayed_rows(candidates, seed=seed)]
    write_text_atomic(Path(path), json.dumps(tasks, ensure_ascii=False, indent=2) + "\n")
    return len(tasks)


@dataclass(frozen=True)
class LabellingExport:
    """Where a round's files went: ``to_label`` (JSONL) and ``label_studio_tasks`` (JSON), ``count`` rows."""

    to_label: Path
    label_studio_tasks: Path
    count: int


def export_for_labelling(
    candidates: Iterable[Mapping[str, Any]], out_dir: str | os.PathLike, *, seed: int
) -> LabellingExport:
    """Both files of one round in ``out_dir`` (``to_label.jsonl`` and ``label_studio_tasks.json``)."""
    cands = list(candidates)
    out = Path(out_dir)
    n = write_to_label(cands, out / TO_LABEL_FILENAME, seed=seed)
    write_label_studio_tasks(cands, out / LABEL_STUDIO_TASKS_FILENAME, seed=seed)
    return LabellingExport(out / TO_LABEL_FILENAME, out / LABEL_STUDIO_TASKS_FILENAME, n)
