"""Where a round lives on disk, which prompts it takes, and what its pairs are called.

Iterative DPO keeps one directory per round; online DPO (a round = one step) keeps one pair log for
the run, `<output_dir>/pairs.jsonl`, with pair ids s<step>-p<index> (`trainer.dpo.schedule`).

    <output_dir>/round_<k>/pairs.jsonl           labelled pairs (the pair log), appended as they are labelled
    <output_dir>/round_<k>/candidates.jsonl      --oracle.type file: the round's pairs before people label them
    <output_dir>/round_<k>/to_label.jsonl        --oracle.type file: what labellers see (docs/labelling.md)
    <output_dir>/round_<k>/label_studio_tasks.json  the same, as Label Studio tasks
    <output_dir>/round_<k>/labels_import.json    --oracle.type file: which labels file was imported, its ties
    <output_dir>/round_<k>/preference.jsonl      the round's pairs in OpenRLHF's preference-dataset format
    <output_dir>/round_<k>/model/                the policy after training on the round (Hugging Face format)

Prompts: round k takes prompts [(k-1) M, k M) of the seeded prompt stream (M: prompts per round,
--dpo.prompts_per_round or, online, --rollout.batch_size), so a resumed run finds a round's prompts
again without storing them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.oracle.people import RoundFiles
from openrlhf_pilaf.trainer.dpo.prompts import Prompt, PromptStream


def round_pair_id(round_: int, index: int) -> str:
    return f"r{round_:03d}-p{index:05d}"


def step_pair_id(step: int, index: int) -> str:
    """Online DPO's pair ids (a round is one step)."""
    return f"s{step:06d}-p{index:05d}"


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

    def files(self) -> RoundFiles:
        """The round's labelling files, as the people oracle reads and writes them."""
        return RoundFiles(
            self.round, self.candidates, self.pairs, self.to_label, self.label_studio_tasks, self.labels_import
        )

    def import_record(self) -> dict | None:
        """What the labels import of this round recorded (None before it finished)."""
        if not self.labels_import.exists():
            return None
        return json.loads(self.labels_import.read_text())


def round_prompts(prompts: list[Prompt], *, seed: int, num_episodes: int, round_: int, per_round: int) -> list[Prompt]:
    """Prompts [(round_-1) per_round, round_ per_round) of the seeded stream (episodes in their own orders)."""
    stream = PromptStream(prompts, seed=seed, num_episodes=num_episodes)
    exhausted = f"round {round_}: the prompt set is exhausted (--dpo.prompts_per_round, --train.num_episodes)"
    if round_ > 1:
        stream.load_state_dict(stream_position(len(prompts), (round_ - 1) * per_round))
    batch = stream.next_batch(per_round)
    if batch is None:
        raise ValueError(exhausted)
    return batch


def stream_position(num_prompts: int, consumed: int) -> dict[str, int]:
    """The prompt stream's state after `consumed` prompts (what online checkpoints used to store)."""
    episode, index = divmod(consumed, num_prompts)
    if index == 0 and episode > 0:  # the stream turns the episode over when it next takes a prompt
        episode, index = episode - 1, num_prompts
    return {"episode": episode, "index": index}


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
