"""Start OpenRLHF's own vLLM rollout actors with our worker extension, on an unpatched OpenRLHF.

Why not OpenRLHF's `create_vllm_engines`: it hard-codes the worker extension (OpenRLHF's
`WorkerWrap`) and the engine arguments (bf16, nothing else), and on a Ray cluster without GPUs it
asks for GPU bundles and waits forever. Our engines need our worker extension (`PilafWorkerWrap`:
CPU-safe weight sync, policy-only sync in the interpolated model) and, when interpolated, their own
engine arguments. So we place OpenRLHF's `RolloutRayActor` ourselves, the way `create_vllm_engines`
does: one PACK placement group with a GPU bundle per vLLM rank (tensor-parallel ranks grouped by
node with OpenRLHF's `get_bundle_indices`), or, for a hybrid engine, the caller's shared group at
0.2 GPU per actor; and CPU-only bundles when the cluster has no GPU (vLLM's CPU backend).

    ray.init(...)
    engines = create_rollout_engines(num_engines=2, tensor_parallel_size=1, pretrain=policy_dir, seed=42,
                                     max_model_len=2048, engine_kwargs={"dtype": "float32"})
    init_weight_sync_group(engines, device)   # engines.weight_sync; works with the CPU backend too

Interpolated engines: `engines.vllm_interp.launch.create_interpolated_vllm_engines` (adds their
engine arguments). OpenRLHF's PPO (`cli.train_ppo_ray`) gets these engines through
`create_vllm_engines_like_openrlhf`, which takes `create_vllm_engines`' arguments: every engine the
project starts then syncs weights through one worker extension, whatever GEMM kernels vLLM chose.

Differences from `create_vllm_engines`: `trust_remote_code` is off unless
`engine_kwargs` turn it on; `gpu_memory_utilization=None` means vLLM's default; no multimodal
arguments. TP > 1 and hybrid engines need GPUs (refused on a GPU-less cluster).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from openrlhf_pilaf.engines.vllm_interp.worker import PILAF_WORKER_EXTENSION
from openrlhf_pilaf.utils.checks import check_int

logger = logging.getLogger(__name__)

# OpenRLHF's share of a GPU for each actor colocated in a hybrid engine (vllm_engine.py, create_vllm_engines).
HYBRID_GPU_SHARE = 0.2

# Engine arguments that create_rollout_engines sets itself -> where the caller sets them instead.
_SET_BY_US = {
    "model": "pretrain",
    "tensor_parallel_size": "tensor_parallel_size",
    "distributed_executor_backend": "tensor_parallel_size (1: in the actor, > 1: Ray workers)",
    "seed": "seed (engine i gets seed + i)",
    "worker_extension_cls": "worker_extension_cls",
    "max_model_len": "max_model_len",
    "enforce_eager": "enforce_eager",
    "enable_prefix_caching": "enable_prefix_caching",
    "gpu_memory_utilization": "gpu_memory_utilization",
    "enable_sleep_mode": "vllm_enable_sleep",
    "full_determinism": "full_determinism",
    "agent_func_path": "agent_func_path",
    "remote_rm_url": "remote_rm_url",
    "bundle_indices": "the placement (computed)",
    "num_gpus": "the placement (computed)",
    "mm_pad_token_ids": "nothing (multimodal rollouts are not supported here)",
}


@dataclass(frozen=True)
class EnginePlacement:
    """Where Ray puts one set of engines: create_vllm_engines' placement, plus a CPU-only variant."""

    use_gpu: bool
    bundles: tuple[dict[str, float], ...] | None  # our placement group; None: the caller's shared group
    actor_num_cpus: float
    actor_num_gpus: float
    worker_num_gpus: float  # RolloutRayActor's `num_gpus`: VLLM_RAY_PER_WORKER_GPUS of TP workers
    executor_backend: str  # "uni": vLLM runs in the actor; "ray": TP workers in the group's bundles


def _check_count(value: Any, name: str, flag: str) -> int:
    return check_int(value, f"{name} ({flag})", min=1)


def plan_placement(
    *, num_engines: int, tensor_parallel_size: int, cluster_gpus: float, hybrid: bool
) -> EnginePlacement:
    """The placement of `num_engines` engines of `tensor_parallel_size` ranks each (pure: no Ray).

    `cluster_gpus` is the Ray cluster's GPU count (`ray.cluster_resources()["GPU"]`); `hybrid`
    means the engines go into a placement group the caller shares with its training actors.
    """
    _check_count(num_engines, "num_engines", "--vllm.num_engines")
    tp = _check_count(tensor_parallel_size, "tensor_parallel_size", "--vllm.tensor_parallel_size")
    if cluster_gpus <= 0:
        if tp > 1:
            raise ValueError(
                f"tensor_parallel_size (--vllm.tensor_parallel_size) = {tp} needs GPUs, and this Ray cluster "
                "has none (vLLM's CPU backend runs each engine in its own actor here); use 1"
            )
        if hybrid:
            raise ValueError(
                "a shared placement group (hybrid engine, --train.colocate_all) needs GPUs, and this Ray "
                "cluster has none; start the engines in their own placement group (shared_pg=None)"
            )
        return EnginePlacement(
            use_gpu=False,
            bundles=tuple({"CPU": 1} for _ in range(num_engines)),
            actor_num_cpus=1,
            actor_num_gpus=0,
            worker_num_gpus=0,
            executor_backend="uni",
        )
    share = HYBRID_GPU_SHARE if hybrid else 1
    # With TP > 1 the actor only drives vLLM's Ray workers, which hold the GPUs.
    actor_gpus = share if tp == 1 else 0
    return EnginePlacement(
        use_gpu=True,
        bundles=None if hybrid else tuple({"GPU": 1, "CPU": 1} for _ in range(num_engines * tp)),
        actor_num_cpus=actor_gpus,
        actor_num_gpus=actor_gpus,
        worker_num_gpus=share,
        executor_backend="uni" if tp == 1 else "ray",
    )


def rollout_actor_kwargs(
    placement: EnginePlacement,
    *,
    pretrain: str,
    tensor_parallel_size: int,
    max_model_len: int,
    full_determinism: bool = False,
    enable_prefix_caching: bool = False,
    enforce_eager: bool = False,
    gpu_memory_utilization: float | None = None,
    vllm_enable_sleep: bool = False,
    logprobs_mode: str | None = None,
    agent_func_path: str | None = None,
    remote_rm_url: str | None = None,
    worker_extension_cls: str = PILAF_WORKER_EXTENSION,
    engine_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """RolloutRayActor's keyword arguments common to every engine (seed and bundle_indices are per engine).

    RolloutRayActor takes its own few (bundle_indices, num_gpus, full_determinism, agent_func_path,
    remote_rm_url) and hands the rest to `vllm.AsyncEngineArgs`, so `engine_kwargs` are vLLM engine
    arguments; the ones set here from an argument are refused, naming that argument.
    """
    extra = dict(engine_kwargs or {})
    clash = sorted(set(extra) & set(_SET_BY_US))
    if clash:
        raise ValueError("engine_kwargs may not set " + ", ".join(f"{k!r} (set by {_SET_BY_US[k]})" for k in clash))
    kwargs: dict[str, Any] = {
        "model": pretrain,
        "tensor_parallel_size": tensor_parallel_size,
        "distributed_executor_backend": placement.executor_backend,
        "worker_extension_cls": worker_extension_cls,
        "max_model_len": max_model_len,
        "enforce_eager": enforce_eager,
        "enable_prefix_caching": enable_prefix_caching,
        "enable_sleep_mode": vllm_enable_sleep,
        "full_determinism": full_determinism,
        "num_gpus": placement.worker_num_gpus,
        "agent_func_path": agent_func_path,
        "remote_rm_url": remote_rm_url,
        "dtype": "bfloat16",  # OpenRLHF's choice; engine_kwargs may change it
        "trust_remote_code": False,  # never run a checkpoint's code unless the caller asks
    }
    if gpu_memory_utilization is not None:  # None would fail vLLM's validation; leave vLLM's default
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    if logprobs_mode is not None:
        if "logprobs_mode" in extra:
            raise ValueError("logprobs_mode is given twice: as an argument and in engine_kwargs; keep one")
        # as OpenRLHF: the sampled token's log-prob only (engine_kwargs may ask for more)
        kwargs.update(logprobs_mode=logprobs_mode, max_logprobs=1)
    kwargs.update(extra)
    return kwargs


def cluster_gpu_count() -> float:
    """GPUs of the connected Ray cluster; refuses when Ray is not initialised (placement depends on it)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError(
            "Ray is not initialised: call ray.init() (or connect to the cluster) before creating rollout "
            "engines; their placement depends on whether the cluster has GPUs"
        )
    return float(ray.cluster_resources().get("GPU", 0))


def require_openrlhf_stack(*, cpu_stack: bool) -> None:
    """Refuse on the driver, naming the command to run, before OpenRLHF is imported or an actor starts."""
    from openrlhf_pilaf.utils.openrlhf_patches import require_patches, require_supported_openrlhf

    require_supported_openrlhf()
    require_patches(cpu_stack=cpu_stack)


def create_rollout_engines(
    *,
    num_engines: int,
    tensor_parallel_size: int,
    pretrain: str,
    seed: int,
    max_model_len: int,
    shared_pg: Any = None,
    **kwargs: Any,
) -> list:
    """OpenRLHF `RolloutRayActor` handles, one per engine, running our worker extension.

    `kwargs` are `rollout_actor_kwargs`' (enforce_eager, gpu_memory_utilization, logprobs_mode,
    vllm_enable_sleep, engine_kwargs, ...), named as in OpenRLHF's `create_vllm_engines`.
    Everything is validated, and the OpenRLHF install checked, before any actor starts.
    """
    import ray

    placement = plan_placement(
        num_engines=num_engines,
        tensor_parallel_size=tensor_parallel_size,
        cluster_gpus=cluster_gpu_count(),
        hybrid=shared_pg is not None,
    )
    actor_kwargs = rollout_actor_kwargs(
        placement, pretrain=pretrain, tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len, **kwargs
    )
    require_openrlhf_stack(cpu_stack=not placement.use_gpu)

    from openrlhf.trainer.ray import vllm_engine
    from openrlhf.trainer.ray.utils import get_bundle_indices
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = shared_pg
    if placement.bundles is not None:
        pg = placement_group(list(placement.bundles), strategy="PACK")
        ray.get(pg.ready())
    engines = []
    for i in range(num_engines):
        bundle_indices = get_bundle_indices(pg, i, tensor_parallel_size) if tensor_parallel_size > 1 else None
        scheduling = PlacementGroupSchedulingStrategy(
            placement_group=pg,
            placement_group_capture_child_tasks=True,
            placement_group_bundle_index=bundle_indices[0] if bundle_indices else i,
        )
        engines.append(
            vllm_engine.RolloutRayActor.options(
                num_cpus=placement.actor_num_cpus,
                num_gpus=placement.actor_num_gpus,
                scheduling_strategy=scheduling,
            ).remote(**actor_kwargs, seed=seed + i, bundle_indices=bundle_indices)
        )
    if actor_kwargs["enable_sleep_mode"]:
        vllm_engine.batch_vllm_engine_call(engines, "sleep")
    return engines


def create_vllm_engines_like_openrlhf(
    num_engines: int,
    tensor_parallel_size: int,
    pretrain: str,
    seed: int,
    full_determinism: bool,
    enable_prefix_caching: bool,
    enforce_eager: bool,
    max_model_len: int,
    shared_pg: Any = None,
    gpu_memory_utilization: float | None = None,
    vllm_enable_sleep: bool = False,
    logprobs_mode: str | None = None,
    agent_func_path: str | None = None,
    remote_rm_url: str | None = None,
    max_images_per_prompt: int = 0,
) -> list:
    """OpenRLHF 0.11.2's `create_vllm_engines` (same arguments, same engine arguments: bf16, the
    checkpoint's own code trusted), started by `create_rollout_engines` with our worker extension.

    Why: OpenRLHF's `WorkerWrap.update_weight` loads each synced tensor with `model.load_weights`,
    which on vLLM's CPU backend fails or goes stale wherever vLLM packed a linear weight for its CPU
    kernels (oneDNN, AMX/SGL, zentorch; see `engines/vllm_interp/worker.py`). Swapped in for OpenRLHF's by
    our PPO launcher (`cli/train_ppo_ray.py`), on GPU clusters too, so PPO and DPO share one sync.
    """
    if max_images_per_prompt > 0:
        raise ValueError(
            f"--data.max_images_per_prompt {max_images_per_prompt}: multimodal rollouts are not supported by "
            "openrlhf-pilaf's engines; run OpenRLHF's own `python -m openrlhf.cli.train_ppo_ray` for them"
        )
    return create_rollout_engines(
        num_engines=num_engines,
        tensor_parallel_size=tensor_parallel_size,
        pretrain=pretrain,
        seed=seed,
        max_model_len=max_model_len,
        shared_pg=shared_pg,
        full_determinism=full_determinism,
        enable_prefix_caching=enable_prefix_caching,
        enforce_eager=enforce_eager,
        gpu_memory_utilization=gpu_memory_utilization,
        vllm_enable_sleep=vllm_enable_sleep,
        logprobs_mode=logprobs_mode,
        agent_func_path=agent_func_path,
        remote_rm_url=remote_rm_url,
        engine_kwargs={"trust_remote_code": True},  # as create_vllm_engines: PPO users' checkpoints may need it
    )
