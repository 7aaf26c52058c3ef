"""Iterative DPO (rounds of generate, label, train) on the online DPO launcher's parts."""

from openrlhf_pilaf.trainer.iterative_dpo.loop import AwaitingLabels, IterativeDPOLoop, IterativeState
from openrlhf_pilaf.trainer.iterative_dpo.rounds import RoundDir, round_pair_id

__all__ = ["AwaitingLabels", "IterativeDPOLoop", "IterativeState", "RoundDir", "round_pair_id"]
