"""Preference pairs: what a sampler makes from generated samples, what the oracle labels, what the log keeps."""

from openrlhf_pilaf.pairs.log import PairLog, PairLogError, TrainingPair, pair_row
from openrlhf_pilaf.pairs.types import BRANCHES, Branch, CandidatePair, LabelledPair, Response, branch_of

__all__ = [
    "BRANCHES",
    "Branch",
    "CandidatePair",
    "LabelledPair",
    "PairLog",
    "PairLogError",
    "Response",
    "TrainingPair",
    "branch_of",
    "pair_row",
]
