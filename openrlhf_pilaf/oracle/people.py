"""People as the preference oracle: a round's pairs go out as files, labels come back in one file.

People cannot label inside a run: the round's candidate pairs are written blind for labellers
(`to_label.jsonl` and Label Studio tasks, `labelling.export`), the launcher exits, and a re-run with
`--oracle.labels_file` imports the labels (`labelling.labels_file`, all validated before any is used).
A person judges a pair once, so a pair costs one label; a tie is judged and paid for, then dropped
from training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.pairs import PairLog
from openrlhf_pilaf.utils.atomic_io import write_json_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AwaitingLabels:
    """A round's pairs are written for people to label; the run stops here (exit 0) until they are."""

    round: int
    to_label: Path
    label_studio_tasks: Path
    pairs: int


@dataclass(frozen=True)
class RoundFiles:
    """Where one round's labelling files live (the trainer's round directory names them)."""

    round: int
    candidates: Path  # the round's pairs before people label them (the candidate log)
    pairs: Path  # the labelled pair log
    to_label: Path
    label_studio_tasks: Path
    labels_import: Path  # what the import recorded: source, labelled, ties


class PeopleOracle:
    """`--oracle.type file`: exports a round for labelling, or imports its labels from `--oracle.labels_file`."""

    kind = "people"
    labels_per_pair = 1
    inline = False  # labels arrive between two runs of the launcher, not while it runs

    def __init__(self, labels_file: str | None, seed: int) -> None:
        self.labels_file, self.seed = labels_file, seed

    def request_labels(self, files: RoundFiles, pair_ids: Sequence[str]) -> AwaitingLabels:
        """Write the round's candidates for labellers (blind, in a seeded display order)."""
        from openrlhf_pilaf.labelling import write_label_studio_tasks, write_to_label

        candidates = PairLog(files.candidates, labelled=False)
        rows = [candidates.row(i) for i in pair_ids]
        write_to_label(rows, files.to_label, seed=self.seed)
        write_label_studio_tasks(rows, files.label_studio_tasks, seed=self.seed)
        return AwaitingLabels(files.round, files.to_label, files.label_studio_tasks, len(rows))

    def import_labels(self, files: RoundFiles, pair_ids: Sequence[str]) -> dict | None:
        """Import the round's labels from `--oracle.labels_file` into its pair log; None when no file is given.

        The file labels one round: once imported it is spent, and the next round is exported for labelling."""
        from openrlhf_pilaf.labelling import load_labels

        if self.labels_file is None:
            return None
        try:
            labels = load_labels(self.labels_file, pair_ids, seed=self.seed)
        except ValueError as e:
            raise ValueError(
                f"--oracle.labels_file {self.labels_file} does not fit round {files.round} ({files.to_label}): {e}"
            ) from e
        self.labels_file = None
        candidates, pairs = PairLog(files.candidates, labelled=False), PairLog(files.pairs)
        for pid in pair_ids:
            if pid in labels.labels and pid not in pairs:
                row = dict(candidates.row(pid), score_a=None, score_b=None, label=labels.labels[pid])
                row["labeller"] = f"file:{labels.source}"
                pairs.append(row)
        record = {"source": labels.source, "labelled": len(labels.labels), "ties": sorted(labels.ties)}
        write_json_atomic(files.labels_import, record)
        logger.info(
            "round %d: imported %d labels from %s; %d ties dropped", files.round, len(labels.labels), labels.source,
            len(labels.ties),
        )  # fmt: skip
        return record
