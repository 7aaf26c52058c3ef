"""The preference oracle: a reward model (OpenRLHF's reward mechanisms) or a person labels each pair."""

from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.oracle.labels import label_pair, pair_rng, prob_a_preferred
from openrlhf_pilaf.oracle.oracle import OracleError, PreferenceOracle
from openrlhf_pilaf.oracle.scorers import (
    PythonFileScorer,
    RemoteScorer,
    Scorer,
    ScoreRequest,
    ScorerError,
    scorer_from_remote_url,
)

__all__ = [
    "OracleConfig",
    "OracleError",
    "PreferenceOracle",
    "PythonFileScorer",
    "RemoteScorer",
    "ScoreRequest",
    "Scorer",
    "ScorerError",
    "label_pair",
    "pair_rng",
    "prob_a_preferred",
    "scorer_from_remote_url",
]
