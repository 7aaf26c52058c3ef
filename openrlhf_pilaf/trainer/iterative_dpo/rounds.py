"""Where a round of iterative DPO lives on disk, which prompts it takes, and what its pairs are called.

    <output_dir>/round_<k>/pairs.jsonl           labelled pairs (the pair log), appended as they are labelled
    <output_dir>/round_<k>/candidates.jsonl      --oracle.type file: the round's pairs before people label them
    <output_dir>/round_<k>/to_label.jsonl        --oracle.type file: what labellers see (docs/labelling.md)
    <output_dir>/round_<k>/label_studio_tasks.json  the same, as Label Studio tasks
    <output_dir>/round_<k>/labels_import.json    --oracle.type file: which labels file was imported, its ties
    <output_dir>/round_<k>/preference.jsonl      the round's pairs in OpenRLHF's preference-dataset format
    <output_dir>/round_<k>/model/                the policy after training on the round (Hugging Face format)

Prompts: round k takes prompts [(k-1) M, k M) of the seeded prompt stream (M = --dpo.prompts_per_round),
so a resumed run finds a round's prompts again without storing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.trainer.online_dpo.prompts import Prompt, PromptStream


def round_pair_id(round_: int, index: int) -> str:
    return f"r{round_:03d}-p{index:05d}"


@dataclass(frozen=True)
class RoundDir:
    run_dir: Path
    round: int

    @property
    def path(self) -> Path:
        return self.run_dir / f"round_{self.round}"

    @property
    def pairs(self) -> Path:
        return self.path / "pairs.jsonl"

    @property
    def candidates(self) -> Path:
        return self.path / "candidates.jsonl"

    @property
    def to_label(self) -> Path:
        return self.path / "to_label.jsonl"

    @property
    def label_studio_tasks(self) -> Path:
        return self.path / "label_studio_tasks.json"

    @property
    def labels_import(self) -> Path:
        return self.path / "labels_import.json"

    @property
    def preference(self) -> Path:
        return self.path / "preference.jsonl"

    @property
    def model(self) -> Path:
        return self.path / "model"

    def import_record(self) -> dict | None:
        """What the labels import of this round recorded (None before it finished)."""
        if not self.labels_import.exists():
            return None
        return json.loads(self.labels_import.read_text())


def round_prompts(prompts: list[Prompt], *, seed: int, num_episodes: int, round_: int, per_round: int) -> list[Prompt]:
    stream = PromptStream(prompts, seed=seed, num_episodes=num_episodes)
    if round_ > 1 and stream.next_batch((round_ - 1) * per_round) is None:
        raise ValueError(f"round {round_}: the prompt set is exhausted (--dpo.prompts_per_round, --train.num_episodes)")
    batch = stream.next_batch(per_round)
    if batch is None:
        raise ValueError(f"round {round_}: the prompt set is exhausted (--dpo.prompts_per_round, --train.num_episodes)")
    return batch


def prompts_per_round(num_prompts: int, *, num_episodes: int, rounds: int, given: int | None) -> int:
    """--dpo.prompts_per_round, or the prompt set (times its episodes) split evenly over the rounds."""
    available = num_prompts * num_episodes
    per_round = available // rounds if given is None else given
    if per_round < 1 or per_round * rounds > available:
        raise ValueError(
            f"{rounds} rounds (--dpo.rounds) x {per_round} prompts per round (--dpo.prompts_per_round) need "
            f"{rounds * max(per_round, 1)} prompts, but {num_prompts} prompts x {num_episodes} episodes "
            "(--train.num_episodes) give "
            f"{available}"
        )
    return per_round
