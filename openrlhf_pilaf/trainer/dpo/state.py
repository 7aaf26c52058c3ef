"""What a DPO checkpoint records on the driver, next to the learner's DeepSpeed checkpoint.

One file, `<ckpt.checkpoint_dir>/driver_state.json`, for both schedules. It names the schedule it
belongs to, so that a run is resumed only by the schedule that wrote it; files written before online
and iterative DPO shared one loop (an online file has `prompt_stream`, an iterative one `rounds_done`,
neither a `mode`) are read and checked the same way.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf.trainer.dpo.rounds import stream_position
from openrlhf_pilaf.trainer.dpo.schedule import Schedule
from openrlhf_pilaf.utils.atomic_io import write_json_atomic

STATE_FILE = "driver_state.json"

_PER_ROUND_FLAG = {"online": "--rollout.batch_size", "iterative": "--dpo.prompts_per_round"}


class StateMismatch(ValueError):
    """A checkpoint that this run's flags cannot resume (the message names the flag that changed)."""


@dataclass
class DriverState:
    mode: str = ""  # the schedule that wrote it
    prompts_per_round: int = 0
    rounds_done: int = 0  # rounds whose training is complete and in the checkpoint
    round: int = 0  # the round being trained at a mid-round checkpoint (0: none) ...
    epoch: int = 0  # ... its next epoch ...
    batch: int = 0  # ... and the next learner call of that epoch
    step: int = 0  # learner calls done over the whole run
    pairs_labelled: int = 0  # over the rounds collected so far
    labels_spent: int = 0
    policy_tokens: int = 0  # generated tokens x policy passes the engines ran, over new pairs
    reference_tokens: int = 0  # ... and reference passes (decoding and scoring)
    policy_tokens_needed: int = 0  # ... as sampling at each row's w needs them (docs/interpolation.md, the cost
    reference_tokens_needed: int = 0  # table): what an engine that skipped every unneeded pass would run
    tag: str | None = None  # the learner checkpoint this state goes with

    def save(self, ckpt_dir: Path) -> None:
        write_json_atomic(Path(ckpt_dir) / STATE_FILE, dataclasses.asdict(self))

    @classmethod
    def load(cls, ckpt_dir: Path, schedule: Schedule, *, num_prompts: int) -> DriverState | None:
        """The state under `ckpt_dir`, checked against `schedule`; None when there is none.

        `num_prompts` (the prompt set's size) lets an old online file, which stored the prompt stream's
        position rather than the batch size, say whether --rollout.batch_size changed."""
        path = Path(ckpt_dir) / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        if "mode" not in data:
            data = _from_old_file(data, num_prompts, path)
        fields = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in fields})
        if state.mode != schedule.mode:
            raise StateMismatch(
                f"{path} is a --dpo.mode {state.mode} checkpoint; resume it with --dpo.mode {state.mode}"
            )
        if state.prompts_per_round and state.prompts_per_round != schedule.prompts_per_round:
            flag = _PER_ROUND_FLAG[state.mode]
            raise StateMismatch(
                f"{path} was written with {flag} {state.prompts_per_round}, this run has {schedule.prompts_per_round}: "
                f"resume with {flag} {state.prompts_per_round} (a round's prompts and pair ids depend on it)"
            )
        return state


def _from_old_file(data: dict, num_prompts: int, path: Path) -> dict:
    if "rounds_done" in data:  # the iterative loop's file: the same fields, without the schedule
        return {**data, "mode": "iterative", "prompts_per_round": 0}
    step = int(data.get("step", 0))  # the online loop's file: a round was a step
    position = data.get("prompt_stream", {"episode": 0, "index": 0})
    per_round = 0
    if step > 0:
        consumed = int(position["episode"]) * num_prompts + int(position["index"])
        per_round = consumed // step if consumed % step == 0 else -1
        if per_round < 1 or stream_position(num_prompts, per_round * step) != position:
            raise StateMismatch(
                f"{path}: {step} steps took the prompt stream to episode {position['episode']}, prompt "
                f"{position['index']}, which no --rollout.batch_size reaches over {num_prompts} prompts: the prompt "
                "set changed (--data.prompt_dataset, --data.max_samples, --data.max_len)"
            )
    return {
        "mode": "online",
        "prompts_per_round": per_round,
        "rounds_done": step,
        "step": step,
        "labels_spent": data.get("labels_spent", 0),
        "pairs_labelled": data.get("labels_spent", 0) // 2,
        "policy_tokens": data.get("policy_tokens", 0),
        "reference_tokens": data.get("reference_tokens", 0),
        "tag": data.get("tag"),
    }
