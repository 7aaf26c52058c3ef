"""Reading a human labels file back, and refusing it whole if anything in it is off.

A labels file is typed by people (or exported from a tool they clicked through), and it feeds training
directly: a mistyped id, a row pasted twice or a pair from another round would otherwise turn into a
silent wrong gradient. So :func:`load_labels` checks the file against the round's pair ids, collects
every problem it finds, and raises one :class:`LabelsFileError` listing them all, so the labeller can fix
the file in one pass; it never returns a partial set.

Labels name the *displayed* a/b (what the labeller saw in ``to_label.jsonl`` or Label Studio);
:func:`load_labels` maps them back to the candidate's own order with the export's seeded coin.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrlhf_pilaf.labelling.export import display_swap
from openrlhf_pilaf.labelling.label_studio import read_task

VALID_LABELS = ("a", "b", "tie")
ACCEPTED_EXTENSIONS = {".jsonl": "JSON lines", ".csv": "CSV", ".json": "Label Studio JSON export"}
MISSING_SHOWN = 20  # missing ids listed before "... and N more"
PROBLEMS_SHOWN = 200  # a wholly wrong file should not print a 10,000-line message; .problems keeps all


class LabelsFileError(ValueError):
    """A labels file that cannot be used; ``problems`` lists every reason, one line each."""

    def __init__(self, path: str | os.PathLike, problems: Iterable[str]):
        self.path = str(path)
        self.problems = tuple(problems)
        shown = list(self.problems[:PROBLEMS_SHOWN])
        if len(self.problems) > PROBLEMS_SHOWN:
            shown.append(f"... and {len(self.problems) - PROBLEMS_SHOWN} more (all of them in .problems)")
        noun = "problem" if len(self.problems) == 1 else "problems"
        super().__init__(
            f"labels file {self.path} has {len(self.problems)} {noun}; nothing was loaded:\n  " + "\n  ".join(shown)
        )


@dataclass(frozen=True)
class LabelSet:
    """A validated round of human labels, in the candidates' own a/b order.

    ``labels`` maps pair_id -> 'a' | 'b' for strict preferences; ``ties`` holds the pairs judged equal
    (DPO has no loss for them, so the caller decides what to do); ``source`` is the file they came from.
    """

    labels: dict[str, str]
    ties: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class _Entry:
    """One record of a labels file. ``label`` is the normalised displayed label, or None when the
    record's fault is already among the problems, or (with ``note``) when a Label Studio task simply
    carries no label, which counts as missing."""

    pair_id: str
    label: str | None
    where: str
    pos: int
    note: str = ""


@dataclass
class _Parsed:
    entries: list[_Entry] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (position, message), sorted later

    def problem(self, pos: int, message: str) -> None:
        self.problems.append((pos, message))


def _normalise_label(raw: Any, pair_id: str, where: str, parsed: _Parsed, pos: int) -> str | None:
    if not isinstance(raw, str):
        parsed.problem(pos, f"{where}: label for pair {pair_id!r} must be a string, got {raw!r}")
        return None
    label = raw.strip().lower()
    if not label:
        parsed.problem(pos, f"{where}: empty label for pair {pair_id!r}")
        return None
    if label not in VALID_LABELS:
        parsed.problem(pos, f"{where}: label {raw!r} for pair {pair_id!r} is not one of a, b, tie")
        return None
    return label


def _parse_jsonl(text: str, parsed: _Parsed) -> None:
    # split on "\n" only: str.splitlines would also break inside a response holding U+2028 and friends
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            parsed.problem(lineno, f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(obj, dict):
            parsed.problem(lineno, f"{where}: a JSON {type(obj).__name__}, expected an object")
            continue
        missing = [key for key in ("pair_id", "label") if key not in obj]
        pair_id = obj.get("pair_id")
        if "pair_id" in obj and (not isinstance(pair_id, str) or not pair_id):
            parsed.problem(lineno, f"{where}: pair_id must be a non-empty string, got {pair_id!r}")
            continue
        if missing:
            parsed.problem(lineno, f"{where}: missing key(s) {', '.join(missing)}")
            if "pair_id" in obj:
                parsed.entries.append(_Entry(pair_id, None, where, lineno))
            continue
        label = _normalise_label(obj["label"], pair_id, where, parsed, lineno)
        parsed.entries.append(_Entry(pair_id, label, where, lineno))


def _parse_csv(text: str, parsed: _Parsed) -> None:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        return  # an empty file: every expected id will be reported missing
    except csv.Error as e:
        parsed.problem(1, f"line 1: unreadable CSV header ({e})")
        return
    names = [h.strip().lower() for h in header]
    bad_columns = [col for col in ("pair_id", "label") if names.count(col) != 1]
    for col in bad_columns:
        parsed.problem(
            1, f"line 1: the header needs exactly one {col!r} column, got {header!r} (expected pair_id,label)"
        )
    if bad_columns:
        return
    i_id, i_label = names.index("pair_id"), names.index("label")
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            parsed.problem(reader.line_num, f"line {reader.line_num}: unreadable CSV ({e})")
            break
        lineno = reader.line_num
        where = f"line {lineno}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            parsed.problem(lineno, f"{where}: {len(row)} field(s) where the header has {len(header)}")
            continue
        pair_id = row[i_id]
        if not pair_id.strip():
            parsed.problem(lineno, f"{where}: empty pair_id")
            continue
        label = _normalise_label(row[i_label], pair_id, where, parsed, lineno)
        parsed.entries.append(_Entry(pair_id, label, where, lineno))


def _parse_label_studio(data: Any, parsed: _Parsed) -> None:
    if not isinstance(data, list):
        parsed.problem(
            0,
            f"expected a JSON array of tasks (Label Studio's 'JSON' export), got a JSON {type(data).__name__}",
        )
        return
    for index, task in enumerate(data):
        reading = read_task(task, index)
        for message in reading.problems:
            parsed.problem(index, message)
        if reading.pair_id is not None:
            parsed.entries.append(_Entry(reading.pair_id, reading.label, reading.where, index, reading.note))


def _parse_file(path: Path) -> _Parsed:
    parsed = _Parsed()
    suffix = path.suffix.lower()
    if suffix not in ACCEPTED_EXTENSIONS:
        accepted = ", ".join(f"{ext} ({what})" for ext, what in ACCEPTED_EXTENSIONS.items())
        raise LabelsFileError(path, [f"unsupported extension {path.suffix or '(none)'!r}; accepted: {accepted}"])
    if not path.is_file():
        raise LabelsFileError(path, ["no such file"])
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheets like to prepend a BOM
    except UnicodeDecodeError as e:
        raise LabelsFileError(path, [f"not UTF-8 text ({e})"]) from None
    if suffix == ".jsonl":
        _parse_jsonl(text, parsed)
    elif suffix == ".csv":
        _parse_csv(text, parsed)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelsFileError(path, [f"line {e.lineno}: not valid JSON ({e.msg})"]) from None
        _parse_label_studio(data, parsed)
    return parsed


def _duplicate_problems(parsed: _Parsed) -> None:
    first: dict[str, str] = {}
    for e in parsed.entries:
        if e.pair_id in first:
            parsed.problem(e.pos, f"{e.where}: duplicate pair_id {e.pair_id!r} (first at {first[e.pair_id]})")
        else:
            first[e.pair_id] = e.where


def _sorted_messages(parsed: _Parsed) -> list[str]:
    return [message for _, message in sorted(parsed.problems, key=lambda p: p[0])]


def read_label_studio_export(data: Any) -> list[tuple[str, str | None, str]]:
    """``(pair_id, displayed label or None, where)`` per task of a parsed Label Studio JSON export.

    A pairwise "left" is 'a', "right" is 'b', a ticked tie is 'tie'; a task that is unannotated or
    only has cancelled (skipped) annotations has label None and ``where`` says why. Malformed tasks and
    annotators who disagree raise one :class:`LabelsFileError` listing all of them.
    """
    parsed = _Parsed()
    _parse_label_studio(data, parsed)
    if parsed.problems:
        raise LabelsFileError("<Label Studio export>", _sorted_messages(parsed))
    return [(e.pair_id, e.label, f"{e.where}: {e.note}" if e.note else e.where) for e in parsed.entries]


def read_labels(path: str | os.PathLike) -> dict[str, str]:
    """pair_id -> displayed label ('a', 'b', 'tie') from a labels file, format chosen by extension.

    Checks what the file alone can show (syntax, values, duplicates); whether the ids are the round's
    and whether any are missing needs the round, which is :func:`load_labels`' job. Label Studio tasks
    without a label are left out.
    """
    parsed = _parse_file(Path(path))
    _duplicate_problems(parsed)
    if parsed.problems:
        raise LabelsFileError(path, _sorted_messages(parsed))
    return {e.pair_id: e.label for e in parsed.entries if e.label is not None}


def load_labels(path: str | os.PathLike, expected_ids: Iterable[str], *, seed: int) -> LabelSet:
    """Load and validate one round's labels file against the round's pair ids.

    ``seed`` must be the one the export used: labels refer to the displayed a/b and are mapped back
    through :func:`~openrlhf_pilaf.labelling.export.display_swap`. Unknown ids, duplicate ids (even with
    the same label), missing ids, bad label values and malformed records are all collected and raised
    together as one :class:`LabelsFileError`.
    """
    expected = list(expected_ids)
    if len(set(expected)) != len(expected):
        dupes = sorted({pid for pid in expected if expected.count(pid) > 1})
        raise ValueError(f"expected_ids holds duplicates {dupes[:MISSING_SHOWN]}: the round's pair ids must be unique")
    expected_set = set(expected)
    path = Path(path)
    parsed = _parse_file(path)
    _duplicate_problems(parsed)

    last = max([pos for pos, _ in parsed.problems] + [e.pos for e in parsed.entries], default=0) + 1
    unknown = [e for e in parsed.entries if e.pair_id not in expected_set]
    for e in unknown:
        parsed.problem(e.pos, f"{e.where}: unknown pair_id {e.pair_id!r} (not among this round's candidates)")
    if parsed.entries and len(unknown) == len(parsed.entries) and expected:
        parsed.problem(
            last,
            "none of the file's pair ids belong to this round: is it the labels file of another round or run?",
        )

    present = {e.pair_id for e in parsed.entries if not e.note}
    notes = {e.pair_id: f"{e.where}: {e.note}" for e in parsed.entries if e.note}
    missing = [pid for pid in expected if pid not in present]
    if missing:
        shown = [f"{pid} ({notes[pid]})" if pid in notes else pid for pid in missing[:MISSING_SHOWN]]
        more = f", ... and {len(missing) - MISSING_SHOWN} more" if len(missing) > MISSING_SHOWN else ""
        parsed.problem(
            last + 1, f"missing labels for {len(missing)} of {len(expected)} pair(s): {', '.join(shown)}{more}"
        )
    if parsed.problems:
        raise LabelsFileError(path, _sorted_messages(parsed))

    displayed = {e.pair_id: e.label for e in parsed.entries}
    labels: dict[str, str] = {}
    ties: list[str] = []
    for pid in expected:
        label = displayed[pid]
        if label == "tie":
            ties.append(pid)
        elif display_swap(seed, pid):
            labels[pid] = "b" if label == "a" else "a"
        else:
            labels[pid] = label
    return LabelSet(labels=labels, ties=tuple(ties), source=str(path))
