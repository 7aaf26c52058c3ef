"""Start-up check that a launch's GPU requests fit the Ray cluster, instead of waiting forever.

Ray does not refuse a placement group or an actor it cannot place: it waits, and its autoscaler
repeats "No available node types can fulfill resource request {'CPU': 1.0, 'GPU': 1.0}" until
someone kills the job. OpenRLHF's PPO asks for its GPUs deep inside `train()`, one model group
at a time, so a launch with too few GPUs hangs after minutes of start-up, saying nothing useful.

A launcher describes what it will ask for as `GpuRequest`s, each the product of the flags that
decide it (e.g. `--actor.num_nodes 1` x `--actor.num_gpus_per_node 8`), and calls `check_gpus`
with what the cluster has; the refusal names every flag to change. `openrlhf_ppo_gpu_requests`
is that description for OpenRLHF 0.11.2's `train_ppo_ray`. The arithmetic is pure: no Ray here
except in `ray_cluster_gpus`.

Totals only: OpenRLHF's placement groups are PACK (a preference, not a one-node requirement) and
its other actors take one GPU each, so a request fits when the cluster's GPU total covers it.

On a cluster without GPUs (the CPU stack: our patch 0005, and our engine start for vLLM) the same groups are placed on
CPU bundles, one logical CPU per rank where a GPU would be, so the same `GpuRequest`s count CPU
ranks: `check_cpus` compares them (plus the single-controller actors, which need one free CPU to
be scheduled) with the cluster's CPUs and refuses the same way, naming the flags.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openrlhf_pilaf.utils.checks import is_int

# Set to 1 to skip the check, e.g. on an autoscaling cluster that adds GPU nodes on demand (Ray
# counts only the nodes it has now).
SKIP_ENV = "PILAF_SKIP_GPU_PREFLIGHT"


class InsufficientResourcesError(ValueError):
    """A launch asks for more than the Ray cluster has; the message names the flags to change."""


class InsufficientGpusError(InsufficientResourcesError):
    """A launch asks for more GPUs than the cluster has; the message names the flags to change."""


class InsufficientCpusError(InsufficientResourcesError):
    """On a cluster without GPUs, a launch places more ranks on CPUs than the cluster has CPUs."""


@dataclass(frozen=True)
class GpuRequest:
    """GPUs one part of a launch asks for: the product of the values of the flags that decide it.

    `what` says who asks ("actor", "actor + reference (colocated, --train.colocate_actor_ref)");
    `factors` are (flag, value) pairs, e.g. (("--vllm.num_engines", 2), ("--vllm.tensor_parallel_size", 4)).
    """

    what: str
    factors: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not self.factors:
            raise ValueError(f"GpuRequest({self.what!r}) needs at least one (flag, value) factor")
        for flag, value in self.factors:
            if not is_int(value, min=1):
                raise ValueError(f"{flag}: must be a positive integer (GPUs for the {self.what}), got {value!r}")

    @property
    def gpus(self) -> int:
        return math.prod(value for _, value in self.factors)

    def describe(self) -> str:
        product = " x ".join(f"{flag} {value}" for flag, value in self.factors)
        return f"{self.what}: {product} = {self.gpus}" if len(self.factors) > 1 else f"{self.what}: {product}"


def total_gpus(requests: Sequence[GpuRequest]) -> int:
    return sum(r.gpus for r in requests)


def check_gpus(requests: Sequence[GpuRequest], available: float, where: str = "the Ray cluster") -> None:
    """Raise `InsufficientGpusError` unless `available` GPUs cover every request together."""
    needed = total_gpus(requests)
    if needed <= available:
        return
    have = int(available) if float(available).is_integer() else available
    raise InsufficientGpusError(
        f"this launch asks for {needed} GPU{'s' if needed != 1 else ''} "
        f"({'; '.join(r.describe() for r in requests)}), but {where} has {have}: lower these flags, or run on a "
        f"cluster with {needed} GPUs (Ray would otherwise wait for them forever; set {SKIP_ENV}=1 to skip this "
        "check where an autoscaler adds GPU nodes on demand)"
    )


def check_cpus(
    requests: Sequence[GpuRequest],
    available: float,
    *,
    controllers: int = 0,
    where: str = "the Ray cluster",
) -> None:
    """Raise `InsufficientCpusError` unless `available` CPUs hold every rank of `requests` on CPU.

    On a cluster without GPUs each rank that would take a GPU takes one logical CPU instead;
    `controllers` counts actors outside the requests that still need a free CPU to be scheduled
    (OpenRLHF's PPO controller: 1). Ray's CPUs are logical, so the usual fix is starting Ray with
    more of them (`ray start --num-cpus N`); our launchers do so when they start Ray themselves.
    """
    ranks = total_gpus(requests)
    needed = ranks + controllers
    if needed <= available:
        return
    have = int(available) if float(available).is_integer() else available
    extra = f" + {controllers} for the controller" if controllers else ""
    raise InsufficientCpusError(
        f"on a cluster without GPUs this launch places {ranks} rank{'s' if ranks != 1 else ''} on CPUs, one "
        f"CPU each ({'; '.join(r.describe() for r in requests)}){extra}, but {where} has {have} CPUs: lower "
        f"these flags, or give Ray {needed} logical CPUs (ray start --num-cpus {needed}; without RAY_ADDRESS the "
        f"launcher starts such a Ray itself; set {SKIP_ENV}=1 to skip this check)"
    )


def skip_requested() -> bool:
    return os.environ.get(SKIP_ENV, "") not in ("", "0")


def ray_cluster_gpus() -> float:
    """The GPUs of the Ray cluster this process is connected to (all nodes, used or free)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("ray_cluster_gpus() needs ray.init() first")
    return float(ray.cluster_resources().get("GPU", 0))


def ray_cluster_cpus() -> float:
    """The logical CPUs of the Ray cluster this process is connected to (all nodes, used or free)."""
    import ray

    if not ray.is_initialized():
        raise RuntimeError("ray_cluster_cpus() needs ray.init() first")
    return float(ray.cluster_resources().get("CPU", 0))


def _group(args: Any, name: str) -> tuple[tuple[str, int], ...]:
    part = getattr(args, name)
    return ((f"--{name}.num_nodes", part.num_nodes), (f"--{name}.num_gpus_per_node", part.num_gpus_per_node))


def openrlhf_ppo_gpu_requests(args: Any, *, vllm_uses_gpus: bool = True) -> list[GpuRequest]:
    """The GPUs OpenRLHF 0.11.2's `train_ppo_ray.train(args)` asks Ray for, from its parsed flags.

    `args` is the nested namespace `train()` receives (after the entry point's own fix-ups, e.g. the
    critic path set for GAE). Mirrors cli/train_ppo_ray.py:38-146 of 0.11.2: each `RayActorGroup`
    takes num_nodes x num_gpus_per_node GPUs unless it shares a placement group: actor + reference
    under --train.colocate_actor_ref / --train.colocate_all; critic + reward under
    --train.colocate_critic_reward; with --train.colocate_all (not async) the vLLM engines and, unless
    critic and reward have their own group, the critic and reward share the actor's. The reference
    exists only with --algo.kl.init_coef > 0, the reward model only without --reward.remote_url.
    `vllm_uses_gpus=False`: the engines are placed on CPU (our `create_rollout_engines`, on a cluster without GPUs).
    On such a cluster every request here is also the count of CPU ranks (`check_cpus`), engines
    included (one CPU bundle per tensor-parallel rank).
    """
    train, kl = args.train, args.algo.kl
    has_ref = kl.init_coef > 0
    has_critic = bool(args.critic.model_name_or_path)
    has_reward = not args.reward.remote_url
    has_vllm = bool(args.vllm.num_engines) and args.vllm.num_engines > 0
    colocate_all = bool(train.colocate_all)
    vllm_in_actor_group = colocate_all and not train.async_enable
    critic_reward_group = has_critic and bool(train.colocate_critic_reward)

    requests = []
    if colocate_all or train.colocate_actor_ref:
        members = ["actor"] + (["reference"] if has_ref else [])
        if colocate_all:
            members += ["vLLM engines"] if has_vllm and vllm_in_actor_group else []
            if not critic_reward_group:
                members += (["critic"] if has_critic else []) + (["reward model"] if has_reward else [])
        flag = "--train.colocate_all" if colocate_all else "--train.colocate_actor_ref"
        requests.append(GpuRequest(f"{' + '.join(members)} (colocated, {flag})", _group(args, "actor")))
    else:
        requests.append(GpuRequest("actor", _group(args, "actor")))
        if has_ref:
            requests.append(GpuRequest("reference", _group(args, "ref")))
    if has_vllm and not vllm_in_actor_group and vllm_uses_gpus:
        factors = (
            ("--vllm.num_engines", args.vllm.num_engines),
            ("--vllm.tensor_parallel_size", args.vllm.tensor_parallel_size),
        )
        requests.append(GpuRequest("vLLM engines", factors))
    if critic_reward_group:
        members = "critic + reward model" if has_reward else "critic"
        requests.append(GpuRequest(f"{members} (colocated, --train.colocate_critic_reward)", _group(args, "critic")))
    elif not colocate_all:
        if has_critic:
            requests.append(GpuRequest("critic", _group(args, "critic")))
        if has_reward:
            requests.append(GpuRequest("reward model", _group(args, "reward")))
    return requests
