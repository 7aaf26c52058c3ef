"""DPO with pairs made and labelled during the run: one driver, two schedules (online and iterative).

In data-flow order: prompts (OpenRLHF's datasets and formatting, a seeded resumable order), rounds (a
round's prompts, directory and pair ids), collect (prompts -> sampler plan ->
engine -> candidate pairs -> oracle -> pair-log rows), metrics, state (the checkpoint's driver half),
schedule (what a round is), driver (the loop: collect, train, sync, evaluate, checkpoint).
"""

from openrlhf_pilaf.trainer.dpo.driver import DPODriver, Learner, MetricsSink, write_preference_dataset
from openrlhf_pilaf.trainer.dpo.rounds import RoundDir, round_pair_id, step_pair_id
from openrlhf_pilaf.trainer.dpo.schedule import Schedule
from openrlhf_pilaf.trainer.dpo.state import STATE_FILE, DriverState, StateMismatch

__all__ = [
    "STATE_FILE",
    "DPODriver",
    "DriverState",
    "Learner",
    "MetricsSink",
    "RoundDir",
    "Schedule",
    "StateMismatch",
    "round_pair_id",
    "step_pair_id",
    "write_preference_dataset",
]
