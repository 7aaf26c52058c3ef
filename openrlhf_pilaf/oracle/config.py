"""`--oracle.*`: how scores become preference labels, and how a failing scorer is retried."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from openrlhf_pilaf.utils.checks import check_int, is_real
from openrlhf_pilaf.utils.config_cli import check_choices, flag_name


def _flag(name: str) -> str:
    return flag_name(OracleConfig, name)


@dataclass
class OracleConfig:
    """A reward model (or a person) as the preference oracle."""

    cli_group: ClassVar[str] = "oracle"

    type: Literal["reward", "file"] = field(
        default="reward",
        metadata={
            "help": "reward: a reward model or --reward.remote_url labels every pair; file: people label each round "
            "(iterative DPO): the launcher writes round_<k>/to_label.jsonl and exits, a re-run with "
            "--oracle.labels_file imports the labels (docs/labelling.md)"
        },
    )
    labels_file: str | None = field(
        default=None,
        metadata={
            "help": "file oracle: the labels of the pending round (JSONL or CSV pair_id,label, or Label Studio JSON)"
        },
    )
    labels: Literal["bt", "argmax"] = field(
        default="bt",
        metadata={
            "help": "bt: label a over b with probability sigmoid(score_a - score_b) (Bradley-Terry, seeded draw per "
            "pair); argmax: the higher score wins, ties by a seeded coin"
        },
    )
    max_retries: int = field(
        default=3, metadata={"help": "times a failing scorer call (error, timeout, NaN/inf, wrong count) is retried"}
    )
    retry_backoff: float = field(
        default=1.0, metadata={"help": "seconds before the first retry; doubled before each further one"}
    )
    timeout: float = field(default=120.0, metadata={"help": "seconds one HTTP scoring request may take"})
    batch_size: int = field(default=64, metadata={"help": "responses per scorer call"})

    def __post_init__(self) -> None:
        check_choices(self)
        check_int(self.max_retries, _flag("max_retries"), min=0)
        for name in ("retry_backoff", "timeout"):
            if not is_real(getattr(self, name), min=0, min_exclusive=name == "timeout"):
                raise ValueError(
                    f"{_flag(name)} must be a finite number of seconds{' > 0' if name == 'timeout' else ' >= 0'}"
                )
        if self.labels_file is not None and self.type != "file":
            raise ValueError(f"{_flag('labels_file')} needs {_flag('type')} file")
        check_int(self.batch_size, _flag("batch_size"), min=1)
