"""`pairs.jsonl`: every labelled pair, appended the moment the oracle labels it, and read back on resume.

Labels are what users pay for, so the log is the source of truth for them: one JSON object per line,
written with a single `write` of the whole line, then flushed and fsynced before the next pair is
labelled. A crash can therefore only tear the last line; on open, a last line without its newline or
that does not parse is dropped with a warning (and cut off, so later appends start on a clean line).
Anything wrong before the last line is corruption, not a crash, and is refused with its line number.

Row schema (README, "Pair log"): pair_id, step, sampler, prompt, response_a, response_b, branch_a,
branch_b, w_a, w_b, logp_policy_a, logp_policy_b, logp_ref_a, logp_ref_b (sums over the response at
the time of sampling), score_a, score_b, label ("a" or "b"); and what a resumed run needs to train on
the pair without generating it again: prompt_ids, token_ids_a, token_ids_b.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openrlhf_pilaf.pairs.types import CandidatePair, LabelledPair

logger = logging.getLogger(__name__)

REQUIRED_FIELDS = (
    "pair_id",
    "step",
    "sampler",
    "prompt",
    "response_a",
    "response_b",
    "branch_a",
    "branch_b",
    "w_a",
    "w_b",
    "logp_policy_a",
    "logp_policy_b",
    "logp_ref_a",
    "logp_ref_b",
    "score_a",
    "score_b",
    "label",
    "prompt_ids",
    "token_ids_a",
    "token_ids_b",
)


class PairLogError(RuntimeError):
    """The pair log cannot be read or appended to safely; the message names the file and line."""


@dataclass(frozen=True)
class TrainingPair:
    """What a DPO step needs of a labelled pair: token ids and the reference's log-prob of each response."""

    pair_id: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    ref_logp_chosen: float
    ref_logp_rejected: float

    @classmethod
    def from_row(cls, row: dict[str, Any], *, reference: str = "ref") -> TrainingPair:
        """`reference="policy"`: the DPO reference is the policy that sampled the pair (iterative DPO with
        --dpo.update_reference), whose log-probs the row holds as logp_policy_*."""
        if reference not in ("ref", "policy"):
            raise ValueError(f"reference must be 'ref' or 'policy', got {reference!r}")
        c, r = ("a", "b") if row["label"] == "a" else ("b", "a")
        return cls(
            pair_id=row["pair_id"],
            prompt_ids=tuple(row["prompt_ids"]),
            chosen_ids=tuple(row[f"token_ids_{c}"]),
            rejected_ids=tuple(row[f"token_ids_{r}"]),
            ref_logp_chosen=float(row[f"logp_{reference}_{c}"]),
            ref_logp_rejected=float(row[f"logp_{reference}_{r}"]),
        )


LABEL_FIELDS = ("score_a", "score_b", "label")
CANDIDATE_FIELDS = tuple(k for k in REQUIRED_FIELDS if k not in LABEL_FIELDS)


def pair_row(labelled: LabelledPair, *, sampler: str, response_a: str, response_b: str) -> dict[str, Any]:
    """The log row of a labelled pair (texts are decoded by the caller, who holds the tokenizer)."""
    row = candidate_row(labelled.pair, sampler=sampler, response_a=response_a, response_b=response_b)
    row.update(score_a=labelled.score_a, score_b=labelled.score_b, label=labelled.label)
    if labelled.extra:
        row["extra"] = labelled.extra
    return row


def candidate_row(p: CandidatePair, *, sampler: str, response_a: str, response_b: str) -> dict[str, Any]:
    """The log row of a pair before it is labelled (what a file oracle's round keeps while people label it)."""
    if p.prompt is None:
        raise ValueError(f"pair {p.pair_id}: the prompt text is needed for the log")
    return {
        "pair_id": p.pair_id,
        "step": p.step,
        "sampler": sampler,
        "prompt": p.prompt,
        "response_a": response_a,
        "response_b": response_b,
        "branch_a": p.a.branch,
        "branch_b": p.b.branch,
        "w_a": p.a.w,
        "w_b": p.b.w,
        "logp_policy_a": p.a.logp_policy,
        "logp_policy_b": p.b.logp_policy,
        "logp_ref_a": p.a.logp_reference,
        "logp_ref_b": p.b.logp_reference,
        "prompt_ids": list(p.prompt_ids),
        "token_ids_a": list(p.a.token_ids),
        "token_ids_b": list(p.b.token_ids),
        "policy_forwards": p.policy_forwards,
        "reference_forwards": p.reference_forwards,
    }


def _check_row(row: Any, where: str, labelled: bool = True) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise PairLogError(f"{where}: a row must be a JSON object")
    missing = [k for k in (REQUIRED_FIELDS if labelled else CANDIDATE_FIELDS) if k not in row]
    if missing:
        raise PairLogError(f"{where}: missing fields {missing}")
    if labelled and row["label"] not in ("a", "b"):
        raise PairLogError(f"{where}: label must be 'a' or 'b', got {row['label']!r}")
    for k in ("logp_ref_a", "logp_ref_b"):
        if not isinstance(row[k], (int, float)) or not math.isfinite(row[k]):
            raise PairLogError(f"{where}: {k} must be a finite number, got {row[k]!r}")
    return row


class PairLog:
    """Append-only, crash-safe log of labelled pairs, indexed by pair_id; `labelled=False` logs candidate pairs
    (every field but the scores and the label: a round waiting for people's labels)."""

    def __init__(self, path: str | os.PathLike, *, labelled: bool = True) -> None:
        self.path = Path(path)
        self.labelled = labelled
        self._rows: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        if self.path.exists():
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            _fsync_dir(self.path.parent)

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (b"" if none)
        good_end = 0
        for number, line in enumerate(complete, start=1):
            where = f"{self.path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(complete) and not tail:
                    self._drop_torn(good_end, f"line {number} does not parse ({e.msg})")
                    return
                raise PairLogError(f"{where}: not JSON ({e.msg}); only the last line may be torn by a crash") from None
            row = _check_row(row, where, self.labelled)
            if row["pair_id"] in self._rows:
                raise PairLogError(f"{where}: pair_id {row['pair_id']!r} appears twice")
            self._rows[row["pair_id"]] = row
            good_end += len(line) + 1
        if tail:
            self._recover_tail(tail, good_end, len(complete) + 1)

    def _recover_tail(self, tail: bytes, good_end: int, number: int) -> None:
        """A last line without its newline: keep it if it is a whole row (only the newline was lost), else drop it."""
        try:
            row = _check_row(json.loads(tail), f"{self.path}:{number}", self.labelled)
        except (json.JSONDecodeError, UnicodeDecodeError, PairLogError) as e:
            self._drop_torn(good_end, f"its last line is incomplete ({e})")
            return
        if row["pair_id"] in self._rows:
            raise PairLogError(f"{self.path}:{number}: pair_id {row['pair_id']!r} appears twice")
        with open(self.path, "ab") as f:
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
        self._rows[row["pair_id"]] = row

    def _drop_torn(self, keep_bytes: int, why: str) -> None:
        logger.warning(
            "%s: %s: a write torn by a crash; dropping it (that pair will be labelled again)", self.path, why
        )
        with open(self.path, "r+b") as f:
            f.truncate(keep_bytes)
            f.flush()
            os.fsync(f.fileno())
        self.dropped_torn_line = True

    def __contains__(self, pair_id: str) -> bool:
        return pair_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._rows.values())

    def row(self, pair_id: str) -> dict[str, Any]:
        return self._rows[pair_id]

    def append(self, row: dict[str, Any]) -> None:
        """Write one row and make it durable before returning; a pair_id already logged is refused."""
        row = _check_row(row, f"{self.path}: new row", self.labelled)
        if row["pair_id"] in self._rows:
            raise PairLogError(f"{self.path}: pair {row['pair_id']!r} is already logged; it would be paid for twice")
        line = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode()
        with open(self.path, "ab") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self._rows[row["pair_id"]] = row


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
