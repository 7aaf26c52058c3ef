"""The schedule of a DPO run: the one thing online and iterative DPO differ in.

A run is a sequence of rounds; a round takes its prompts from the seeded stream, collects one labelled
pair per prompt (generated batch by batch with the policy of the round's start), trains DPO on exactly
those pairs for some epochs, and syncs the weights into the engines. As in oat's learner loop
(`sync_params_every`), online and iterative DPO are two settings of the same loop:

    online     a round = one rollout batch (--rollout.batch_size prompts), one pass, one learner call on
               the batch in order; weights sync after every step; evaluated every --eval.steps rounds;
    iterative  a round = --dpo.prompts_per_round prompts, --dpo.epochs shuffled passes in batches of
               --train.batch_size; weights sync once per round; each round keeps a directory
               (round_<k>/: its pairs, its preference dataset, its model) and is evaluated.

Names on disk differ only so that run directories written before the two loops became one still
resume: online pairs are s<step>-p<i> in <output_dir>/pairs.jsonl, iterative ones r<round>-p<i> in
round_<k>/pairs.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from openrlhf_pilaf.trainer.dpo.rounds import RoundDir, round_pair_id, step_pair_id
from openrlhf_pilaf.utils.checks import check_int

Mode = Literal["online", "iterative"]


@dataclass(frozen=True)
class Schedule:
    mode: Mode
    rounds: int
    prompts_per_round: int
    generation_batch: int  # prompts per engine call
    epochs: int = 1
    train_batch: int | None = None  # pairs per learner call; None: the whole round in one call, in order
    update_reference: bool = False  # iterative: round k > 1 is referenced to the policy that sampled it
    eval_every: int = 0  # rounds between evaluations; 0: none
    round_dirs: bool = False  # round_<k>/ holds the round's pairs, preference dataset and model

    def __post_init__(self) -> None:
        if self.mode not in ("online", "iterative"):
            raise ValueError(f"schedule: mode must be online or iterative, got {self.mode!r}")
        for name, minimum in (("rounds", 1), ("prompts_per_round", 1), ("generation_batch", 1), ("epochs", 1)):
            check_int(getattr(self, name), f"Schedule.{name}", min=minimum)
        check_int(self.eval_every, "Schedule.eval_every", min=0)
        check_int(self.train_batch, "Schedule.train_batch", min=1, allow_none=True)

    @classmethod
    def online(cls, *, steps: int, batch_size: int, eval_steps: int) -> Schedule:
        return cls("online", steps, batch_size, batch_size, eval_every=max(eval_steps, 0))

    @classmethod
    def iterative(
        cls,
        *,
        rounds: int,
        prompts_per_round: int,
        rollout_batch_size: int,
        epochs: int,
        train_batch_size: int,
        update_reference: bool,
    ) -> Schedule:
        return cls(
            "iterative",
            rounds,
            prompts_per_round,
            rollout_batch_size,
            epochs=epochs,
            train_batch=train_batch_size,
            update_reference=update_reference,
            eval_every=1,
            round_dirs=True,
        )

    # ------------------------------------------------------------------------------------ names on disk
    def pair_id(self, round_: int, index: int) -> str:
        return round_pair_id(round_, index) if self.round_dirs else step_pair_id(round_, index)

    def pairs_path(self, run_dir: Path, round_: int) -> Path:
        return RoundDir(run_dir, round_).pairs if self.round_dirs else Path(run_dir) / "pairs.jsonl"

    def checkpoint_tag(self, round_: int, step: int) -> str:
        """The end-of-round checkpoint's tag (mid-round checkpoints are global_step<step>)."""
        return f"round{round_}" if self.round_dirs else f"global_step{step}"

    # ------------------------------------------------------------------------------------ seeded choices
    def plan_rng(self, seed: int, round_: int, chunk: int) -> np.random.Generator:
        """The sampler's generator for one generation batch of a round (a resumed round draws the same)."""
        if self.mode == "online":
            return np.random.default_rng([seed, round_])  # one batch per round
        return np.random.default_rng([seed, round_, chunk])

    def batches_per_epoch(self, pairs: int) -> int:
        if self.train_batch is None:
            return 1 if pairs else 0
        return pairs // self.train_batch

    def epoch_batches(self, seed: int, round_: int, epoch: int, pairs: int) -> list[np.ndarray]:
        """The learner calls of one epoch, as indices into the round's pairs (a remainder waits for another
        epoch's order)."""
        if self.train_batch is None:
            return [np.arange(pairs)] if pairs else []
        order = np.random.default_rng([seed, round_, epoch]).permutation(pairs)
        size = self.train_batch
        return [order[b * size : (b + 1) * size] for b in range(pairs // size)]

    def learner_calls(self) -> int:
        """Learner calls of the whole run, counting a round not labelled yet as full (a progress bar's total)."""
        return self.rounds * self.epochs * max(1, self.batches_per_epoch(self.prompts_per_round))

    def reference_of(self, round_: int) -> str:
        """Whose log-probs are the DPO reference of the round's pairs: the fixed reference's, or (iterative with
        --dpo.update_reference) those of the policy that sampled the round."""
        return "policy" if self.update_reference and round_ > 1 else "ref"

    def evaluates_after(self, round_: int) -> bool:
        return self.eval_every > 0 and round_ % self.eval_every == 0
