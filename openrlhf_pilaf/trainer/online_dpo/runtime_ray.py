"""`--engine vllm`: the online DPO loop on OpenRLHF's Ray stack.

- rollout: interpolated vLLM engines (OpenRLHF's RolloutRayActor, policy + reference halves) behind the
  generation interface (`engines.vllm_interp.generation.RayVllmGenerationEngine`: OpenRLHF's SamplesGenerator
  with a w per request);
- reference log-probs: OpenRLHF's `ReferenceModelActor` group (the DPO reference, or the SALSA soup),
  filled into the engine's samples by `RayReferenceFiller`;
- oracle scores: OpenRLHF's `RewardModelActor` group, unless `--reward.remote_url`;
- learner: `DPOLearnerActor` ranks (DeepSpeed, ZeRO 0-3) in a `RayActorGroup`; weight sync into the
  engines' policy half after every step.

Placement is checked before anything starts: on a cluster with GPUs the flags' GPU count must fit
(`utils.ray_resources`), never waited on. A cluster without any GPU is the CPU stack (tests, the demo):
every rank takes one CPU bundle, and our OpenRLHF patches must be applied.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from openrlhf_pilaf.engines.interface import GeneratedSample
from openrlhf_pilaf.pairs.log import TrainingPair
from openrlhf_pilaf.trainer.online_dpo.config import OnlineDPOConfig

logger = logging.getLogger(__name__)


@dataclass
class RayParts:
    learner: Any
    engine: Any
    eval_logprobs: Any  # both log-probs of evaluation samples from actor forwards (engines.kl.MatchedLogprobs)
    reward_group: Any
    shutdown: Callable[[], None]


def gpu_requests(cfg: OnlineDPOConfig):
    from openrlhf_pilaf.utils.ray_resources import GpuRequest

    requests = [
        GpuRequest(
            "learner",
            (("--actor.num_nodes", cfg.actor.num_nodes), ("--actor.num_gpus_per_node", cfg.actor.num_gpus_per_node)),
        ),
        GpuRequest(
            "reference",
            (("--ref.num_nodes", cfg.ref.num_nodes), ("--ref.num_gpus_per_node", cfg.ref.num_gpus_per_node)),
        ),
        GpuRequest(
            "rollout engines",
            (
                ("--vllm.num_engines", cfg.vllm.num_engines),
                ("--vllm.tensor_parallel_size", cfg.vllm.tensor_parallel_size),
            ),
        ),
    ]
    if cfg.reward.model_name_or_path is not None:
        requests.append(
            GpuRequest(
                "reward model",
                (
                    ("--reward.num_nodes", cfg.reward.num_nodes),
                    ("--reward.num_gpus_per_node", cfg.reward.num_gpus_per_node),
                ),
            )
        )
    return requests


def start_ray(cfg: OnlineDPOConfig) -> bool:
    """Connect to (or start) Ray and refuse what cannot be placed; returns whether this is a CPU-only cluster."""
    import ray

    from openrlhf_pilaf.utils import ray_resources
    from openrlhf_pilaf.utils.openrlhf_patches import require_patches, require_supported_openrlhf

    requests = gpu_requests(cfg)
    ranks = ray_resources.total_gpus(requests)
    if not ray.is_initialized():
        if torch.cuda.is_available() or os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:  # the CPU stack: one logical CPU per rank, as many as the flags ask for
            from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack, default_cache_dir

            configure_cpu_stack(default_cache_dir())
            ray.init(num_cpus=max(os.cpu_count() or 1, ranks), num_gpus=0, include_dashboard=False, log_to_driver=False)
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    require_supported_openrlhf()
    if gpus > 0:
        if not ray_resources.skip_requested():
            ray_resources.check_gpus(requests, gpus)
        require_patches(cpu_stack=False)
        return False
    if torch.cuda.is_available():
        raise ValueError(
            "the Ray cluster has no GPUs but this machine has CUDA: start Ray with its GPUs (ray start --num-gpus N) "
            "or unset RAY_ADDRESS"
        )
    cpus = float(resources.get("CPU", 0))
    if ranks > cpus:
        raise ValueError(
            f"this launch places {ranks} ranks on CPUs ({'; '.join(r.describe() for r in requests)}), but the Ray "
            f"cluster has {cpus:g} CPUs: lower these flags"
        )
    require_patches(cpu_stack=True)
    logger.info("Ray cluster without GPUs: %d ranks on CPU (the CPU stack)", ranks)
    return True


def _group(cls, num_nodes: int, per_node: int, cpu_only: bool):
    from openrlhf.trainer.ray.launcher import RayActorGroup
    from ray.util.placement_group import placement_group

    if not cpu_only:
        return RayActorGroup(num_nodes, per_node, cls, num_gpus_per_actor=1)
    import ray

    pg = placement_group([{"CPU": 1}] * (num_nodes * per_node), strategy="PACK")
    ray.get(pg.ready())
    return RayActorGroup(num_nodes, per_node, cls, pg=pg, num_gpus_per_actor=0)


def shard(pairs: Sequence, parts: int) -> list[list]:
    """Contiguous equal shards of whole pairs (the launcher made the count divisible)."""
    size = len(pairs) // parts
    if size * parts != len(pairs):
        raise ValueError(f"{len(pairs)} pairs cannot be split evenly over {parts} learner ranks")
    return [list(pairs[i * size : (i + 1) * size]) for i in range(parts)]


class RayLearner:
    """The loop's Learner over a group of DPOLearnerActor ranks."""

    def __init__(self, group, tokenizer, ckpt_dir: str, max_num: int) -> None:
        self.group, self.tokenizer, self.ckpt_dir, self.max_num = group, tokenizer, ckpt_dir, max_num
        self.actors = list(group._actor_handlers)

    def _all(self, method: str, *args) -> list:
        import ray

        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def train(self, pairs: Sequence[TrainingPair]) -> dict[str, float]:
        import ray

        results = ray.get(
            [a.train_shard.remote(s) for a, s in zip(self.actors, shard(pairs, len(self.actors)), strict=True)]
        )
        return {k: sum(r[k] for r in results) for k in results[0]}

    def sync_weights(self) -> None:
        self._all("broadcast_weights")

    def weights_sha256(self) -> str:
        return self._all("weights_sha256")[0]  # every rank gathers under ZeRO-3; rank 0 holds whole tensors

    def save_checkpoint(self, tag: str, client_state: dict) -> None:
        self._all("save_checkpoint", self.ckpt_dir, tag, self.max_num, client_state)

    def load_checkpoint(self, tag: str) -> None:
        self._all("load_checkpoint", self.ckpt_dir, tag)

    def save_model(self, output_dir: str) -> None:
        self._all("save_model", self.tokenizer, output_dir)


class RayReferenceFiller:
    """Reference log-probs of generated responses from OpenRLHF's ReferenceModelActor group (one sequence an item,
    `engines.scoring.ActorGroupLogprobs`)."""

    def __init__(self, group) -> None:
        from openrlhf_pilaf.engines.scoring import ActorGroupLogprobs

        self.group, self.rows = group, ActorGroupLogprobs(group)

    def __call__(self, samples: list[GeneratedSample]) -> None:
        """Every response's reference log-probs, once: the vLLM engine returns the policy's only."""
        for s, row in zip(samples, self.rows(samples), strict=True):
            s.reference_logprobs = row
            s.reference_logprobs_from = "scored"


def build_ray_parts(cfg: OnlineDPOConfig, args, *, reference_path: str, tokenizer, optimizer_steps: int) -> RayParts:
    import ray
    from openrlhf.trainer.ray.launcher import ReferenceModelActor, RewardModelActor

    from openrlhf_pilaf.engines.scoring import actor_group_logprobs
    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.generation import RayVllmGenerationEngine
    from openrlhf_pilaf.engines.vllm_interp.launch import create_interpolated_vllm_engines
    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import make_strategy
    from openrlhf_pilaf.trainer.online_dpo.ray_actors import DPOLearnerActor

    started = not ray.is_initialized()
    cpu_only = start_ray(cfg)
    strategy = make_strategy(args, cfg)
    engines = create_interpolated_vllm_engines(
        InterpolatedEngineConfig(reference_path=reference_path, logprobs="policy"),
        pretrain=cfg.actor.model_name_or_path,
        num_engines=cfg.vllm.num_engines,
        tensor_parallel_size=cfg.vllm.tensor_parallel_size,
        seed=cfg.train.seed,
        max_model_len=cfg.data.max_len,
        enforce_eager=cfg.vllm.enforce_eager or cpu_only,
        enable_prefix_caching=cfg.vllm.enable_prefix_caching,
        gpu_memory_utilization=cfg.vllm.memory_utilization(cpu_only),
        engine_kwargs={"dtype": {"bf16": "bfloat16", "fp16": "float16"}[cfg.ds.param_dtype]},
    )
    # An engine that failed to start raises here, not later inside a weight-sync rendezvous that would wait forever.
    ray.get([e.get_num_unfinished_requests.remote() for e in engines])
    learners = _group(DPOLearnerActor, cfg.actor.num_nodes, cfg.actor.num_gpus_per_node, cpu_only)
    reference = _group(ReferenceModelActor, cfg.ref.num_nodes, cfg.ref.num_gpus_per_node, cpu_only)
    reward = None
    refs = [
        *learners.async_init_model_from_pretrained(
            strategy,
            cfg.actor.model_name_or_path,
            dict(
                dpo=cfg.dpo,
                actor=cfg.actor,
                adam=cfg.adam,
                optimizer_steps=optimizer_steps,
                pad_token_id=tokenizer.pad_token_id,
            ),
        ),
        *reference.async_init_model_from_pretrained(strategy, reference_path),
    ]
    if cfg.reward.model_name_or_path is not None:
        reward = _group(RewardModelActor, cfg.reward.num_nodes, cfg.reward.num_gpus_per_node, cpu_only)
        refs += reward.async_init_model_from_pretrained(strategy, cfg.reward.model_name_or_path)
    ray.get(refs)
    ray.get([a.init_weight_sync.remote(engines, cfg.vllm.tensor_parallel_size) for a in learners._actor_handlers])
    learner = RayLearner(learners, tokenizer, cfg.ckpt.checkpoint_dir, cfg.ckpt.max_num)
    learner.sync_weights()  # the engines' policy half = the learner's weights, as loaded
    fill_reference = RayReferenceFiller(reference)
    engine = RayVllmGenerationEngine(
        engines,
        tokenizer=tokenizer,
        max_len=cfg.data.max_len,
        logprobs="policy",  # the policy's own log-probs at temperature 1 (vllm_interp/semantics.py)
        reference_filler=fill_reference,
        tensor_parallel_size=cfg.vllm.tensor_parallel_size,
        waves=cfg.vllm.reference_waves,
        prefix_caching=cfg.vllm.enable_prefix_caching,
    )
    return RayParts(
        learner=learner,
        engine=engine,
        eval_logprobs=actor_group_logprobs(learners, reference),
        reward_group=reward,
        shutdown=_shutdown(started, engines, [learners, reference, reward]),
    )


def _shutdown(started: bool, engines: list, groups: list) -> Callable[[], None]:
    """Stop what this run started: Ray itself if it started it, else its actors (a shared cluster lives on)."""

    def stop() -> None:
        import ray

        if started:
            ray.shutdown()
            return
        for handle in [*engines, *(a for g in groups if g is not None for a in g._actor_handlers)]:
            ray.kill(handle)

    return stop
