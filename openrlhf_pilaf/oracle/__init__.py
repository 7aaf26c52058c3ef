"""The preference oracle: a reward model (OpenRLHF's reward mechanisms) or people label each pair (`interface`).

`build_scorer` (build.py) is the one place a scorer is built from reward settings (the DPO launcher's and
cli.evaluate's)."""

from openrlhf_pilaf.oracle.build import RewardSource, build_oracle, build_scorer, is_remote_reward
from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.oracle.interface import Oracle
from openrlhf_pilaf.oracle.labels import label_pair, pair_rng, prob_a_preferred
from openrlhf_pilaf.oracle.oracle import OracleError, PreferenceOracle
from openrlhf_pilaf.oracle.people import AwaitingLabels, PeopleOracle, RoundFiles
from openrlhf_pilaf.oracle.scorers import (
    PythonFileScorer,
    RemoteScorer,
    Scorer,
    ScoreRequest,
    ScorerError,
    scorer_from_remote_url,
)

__all__ = [
    "AwaitingLabels",
    "Oracle",
    "OracleConfig",
    "OracleError",
    "PeopleOracle",
    "PreferenceOracle",
    "PythonFileScorer",
    "RemoteScorer",
    "RewardSource",
    "RoundFiles",
    "ScoreRequest",
    "Scorer",
    "ScorerError",
    "build_oracle",
    "build_scorer",
    "is_remote_reward",
    "label_pair",
    "pair_rng",
    "prob_a_preferred",
    "scorer_from_remote_url",
]
