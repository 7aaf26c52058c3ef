"""`build_scorer` and `build_oracle`: the one place scorers and oracles are built.

`build_oracle` turns `--oracle.*` and a scorer into the run's oracle (people, or the scorer with checks and
retries); the in-run evaluation wraps the same scorer in a `PreferenceOracle` of its own.

The DPO launcher (`trainer.online_dpo.run`, from `--reward.*` and `--oracle.timeout`) and
`cli.evaluate` (from `--reward` and `--evaluate.reward_timeout`) both call it, so that "the oracle" is
the same object whichever command scores: OpenRLHF's remote reward (a .py file with `reward_func` or
an http(s) server), a reward model in this process (`--engine torch`, `cli.evaluate`), or OpenRLHF's
`RewardModelActor` group (`--engine vllm`). It takes the reward settings as any object with the three
fields of `trainer.online_dpo.config.RewardConfig` (`RewardSource`), so that the oracle package does
not import the trainer.
"""

from __future__ import annotations

from typing import Any, Protocol

from openrlhf_pilaf.oracle.config import OracleConfig
from openrlhf_pilaf.oracle.oracle import PreferenceOracle
from openrlhf_pilaf.oracle.people import PeopleOracle
from openrlhf_pilaf.oracle.scorers import Scorer, scorer_from_remote_url


class RewardSource(Protocol):
    """Where rewards come from: at most one of a checkpoint and a remote reward (RewardConfig's fields)."""

    model_name_or_path: str | None
    remote_url: str | None
    normalize_enable: bool


def is_remote_reward(spec: str) -> bool:
    """`spec` names OpenRLHF's remote reward (a .py with reward_func, or an http(s) server), not a checkpoint."""
    return spec.endswith(".py") or spec.startswith(("http://", "https://"))


def build_scorer(
    reward: RewardSource,
    tokenizer: Any,
    *,
    timeout: float,
    device: str = "cpu",
    reward_group: Any = None,
    param_dtype: str = "bf16",
    attn_implementation: str = "sdpa",
) -> Scorer | None:
    """The scorer of `reward`; None when it names nothing (people label: `--oracle.type file`).

    - `reward.remote_url`: `scorer_from_remote_url(url, timeout)` (`timeout`: seconds an HTTP request may take).
    - `reward_group` given (an OpenRLHF `RayActorGroup` of `RewardModelActor`, already loaded): scored there.
    - otherwise `reward.model_name_or_path` is loaded here by OpenRLHF's `get_llm_for_sequence_regression`
      on `device`, in `param_dtype` ("bf16" or "fp16": the dtypes OpenRLHF loads reward models in) with
      `attn_implementation`, normalised by its stored mean/std when `reward.normalize_enable`.
    The reward model scores token ids (the tokenizer's pad id pads its batches), so its tokenizer must be the
    policy's: the callers check that before anything loads.
    """
    if reward.remote_url is not None:
        return scorer_from_remote_url(reward.remote_url, timeout)
    if reward.model_name_or_path is None:
        return None
    if reward_group is not None:
        from openrlhf_pilaf.oracle.reward_model import RayRewardModelScorer

        return RayRewardModelScorer(reward_group)
    from openrlhf_pilaf.oracle.reward_model import RewardModelScorer, load_reward_model

    model = load_reward_model(
        reward.model_name_or_path,
        param_dtype=param_dtype,
        attn_implementation=attn_implementation,
        normalize=reward.normalize_enable,
        device=device,
    )
    return RewardModelScorer(model, tokenizer.pad_token_id)


def build_oracle(config: OracleConfig, scorer: Scorer | None, *, seed: int) -> PreferenceOracle | PeopleOracle:
    """The run's oracle from `--oracle.*`: people (type file) or the scorer (type reward), seeded by `--train.seed`."""
    if config.type == "file":
        return PeopleOracle(config.labels_file, seed)
    if scorer is None:
        raise ValueError("--oracle.type reward needs a scorer: give --reward.model_name_or_path or --reward.remote_url")
    return PreferenceOracle(scorer, config, seed)
