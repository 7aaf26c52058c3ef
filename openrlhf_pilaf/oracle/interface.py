"""The oracle interface: what labels a round's candidate pairs, and the one place oracles are built.

Two kinds, told apart by `inline`:
- a scorer-backed oracle (`PreferenceOracle`: a reward model, `--reward.remote_url`) labels pairs while
  the run goes on, yielding each as it is labelled (`iter_labels`), with checks and retries; the
  in-run evaluation scores through the same checked, retried call (`score`);
- a people-backed oracle (`PeopleOracle`, `--oracle.type file`) exports a round and imports its labels
  between two runs of the launcher.
`labels_per_pair` is what one labelled pair costs (2 scored responses, or 1 human judgement): the
x axis of every labels-spent curve.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.oracle.oracle import PreferenceOracle
from openrlhf_pilaf.oracle.people import PeopleOracle
from openrlhf_pilaf.oracle.scorers import Scorer


@runtime_checkable
class Oracle(Protocol):
    kind: str
    labels_per_pair: int
    inline: bool


def build_oracle(config: OracleConfig, scorer: Scorer | None, *, seed: int) -> PreferenceOracle | PeopleOracle:
    """The run's oracle from `--oracle.*`: people (type file) or the scorer (type reward), seeded by `--train.seed`."""
    if config.type == "file":
        return PeopleOracle(config.labels_file, seed)
    if scorer is None:
        raise ValueError("--oracle.type reward needs a scorer: give --reward.model_name_or_path or --reward.remote_url")
    return PreferenceOracle(scorer, config, seed)
