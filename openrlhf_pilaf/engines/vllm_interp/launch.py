"""Start OpenRLHF's Ray rollout actors as interpolated engines, from the `--interp.*` flags.

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, InterpolatedEngineConfig)      # --interp.reference_path, ...
    args, rest = parser.parse_known_args()
    ray.init(...)
    engines = create_interpolated_vllm_engines(
        dataclass_from_namespace(InterpolatedEngineConfig, args),
        num_engines=2, tensor_parallel_size=1, pretrain=policy_dir, seed=42, max_model_len=2048, ...)

The actors are OpenRLHF's own `RolloutRayActor`, placed by `engines.vllm_interp.rollout_actors` (no patched
OpenRLHF needed on GPU): our worker extension routes weight syncs into the policy half, and the
config's engine arguments select the interpolated architecture, the logits processor and the
log-probs mode.
"""

from __future__ import annotations

from typing import Any

from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig


def interpolated_engine_kwargs(
    cfg: InterpolatedEngineConfig, pretrain: str, engine_kwargs: dict[str, Any] | None = None
) -> dict[str, Any]:
    """vLLM engine arguments: the caller's `engine_kwargs`, plus ours (which may not be overridden)."""
    ours = cfg.engine_kwargs(pretrain)
    theirs = dict(engine_kwargs or {})
    clash = sorted(set(theirs) & set(ours))
    if clash:
        raise ValueError(
            f"engine_kwargs {clash} are set by the interpolated engine (--{cfg.cli_group}.* flags); remove them"
        )
    return {**theirs, **ours}


def create_interpolated_vllm_engines(
    cfg: InterpolatedEngineConfig, *, pretrain: str, engine_kwargs: dict[str, Any] | None = None, **kwargs: Any
) -> list:
    """`rollout_actors.create_rollout_engines(pretrain=..., **kwargs)`, each engine holding the policy
    and the reference."""
    from openrlhf_pilaf.engines.vllm_interp.rollout_actors import create_rollout_engines
    from openrlhf_pilaf.engines.vllm_interp.worker import PILAF_WORKER_EXTENSION

    if kwargs.get("logprobs_mode") is not None:
        raise ValueError("logprobs_mode is set by --interp.logprobs; do not pass it as an argument")
    if kwargs.setdefault("worker_extension_cls", PILAF_WORKER_EXTENSION) != PILAF_WORKER_EXTENSION:
        raise ValueError(
            f"interpolated engines need the worker extension {PILAF_WORKER_EXTENSION} (policy-only weight sync), "
            f"got {kwargs['worker_extension_cls']}"
        )
    return create_rollout_engines(
        pretrain=pretrain, engine_kwargs=interpolated_engine_kwargs(cfg, pretrain, engine_kwargs), **kwargs
    )
