"""Our placement of OpenRLHF's RolloutRayActor (engines.vllm_interp.rollout_actors), without Ray or vLLM running.

The placement is a pure function, checked for GPU and GPU-less clusters, tensor parallelism and hybrid
engines against what OpenRLHF 0.11.2's create_vllm_engines computes on GPUs. Actor creation runs with
Ray's placement calls and the actor class replaced by recorders, and with OpenRLHF's create_vllm_engines
made to raise: the path needs no hook of a patch. Seconds, not minutes.
"""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from openrlhf_pilaf.engines.vllm_interp import rollout_actors as ra
from openrlhf_pilaf.engines.vllm_interp.worker import PILAF_WORKER_EXTENSION

pytestmark = [pytest.mark.openrlhf]

GPU_BUNDLE = {"GPU": 1, "CPU": 1}

# ---------------------------------------------------------------- placement (pure)


@pytest.mark.parametrize(
    ("num_engines", "tp", "gpus", "hybrid", "want"),
    [
        # create_vllm_engines on GPUs: a bundle per rank, the actor holds its GPU when TP = 1 ...
        (2, 1, 8, False, ra.EnginePlacement(True, (GPU_BUNDLE,) * 2, 1, 1, 1, "uni")),
        # ... and with TP > 1 only drives vLLM's Ray workers, one GPU each
        (2, 2, 8, False, ra.EnginePlacement(True, (GPU_BUNDLE,) * 4, 0, 0, 1, "ray")),
        # hybrid: the caller's group, 0.2 GPU per actor (or per TP worker)
        (2, 1, 8, True, ra.EnginePlacement(True, None, 0.2, 0.2, 0.2, "uni")),
        (1, 4, 8, True, ra.EnginePlacement(True, None, 0, 0, 0.2, "ray")),
        # no GPU in the cluster: CPU-only bundles, one CPU per actor
        (3, 1, 0, False, ra.EnginePlacement(False, ({"CPU": 1},) * 3, 1, 0, 0, "uni")),
    ],
)
def test_placement_follows_openrlhf_on_gpus_and_uses_cpu_bundles_without(num_engines, tp, gpus, hybrid, want):
    got = ra.plan_placement(num_engines=num_engines, tensor_parallel_size=tp, cluster_gpus=gpus, hybrid=hybrid)
    assert got == want


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_engines": 0}, "--vllm.num_engines"),
        ({"num_engines": True}, "--vllm.num_engines"),
        ({"tensor_parallel_size": 1.0}, "--vllm.tensor_parallel_size"),
        ({"tensor_parallel_size": 2, "cluster_gpus": 0}, r"--vllm.tensor_parallel_size.*needs GPUs"),
        ({"hybrid": True, "cluster_gpus": 0}, r"--train.colocate_all.*needs GPUs"),
    ],
)
def test_placement_refuses_what_it_cannot_place(kwargs, match):
    args = {"num_engines": 1, "tensor_parallel_size": 1, "cluster_gpus": 4, "hybrid": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        ra.plan_placement(**args)


# ---------------------------------------------------------------- actor arguments (pure)

CPU = ra.plan_placement(num_engines=1, tensor_parallel_size=1, cluster_gpus=0, hybrid=False)


def test_actor_kwargs_carry_our_worker_extension_and_the_callers_engine_args():
    kw = ra.rollout_actor_kwargs(
        CPU, pretrain="pol", tensor_parallel_size=1, max_model_len=64, engine_kwargs={"dtype": "float32", "x": 1}
    )
    assert kw["worker_extension_cls"] == PILAF_WORKER_EXTENSION
    assert (kw["model"], kw["max_model_len"], kw["num_gpus"], kw["distributed_executor_backend"]) == (
        "pol",
        64,
        0,
        "uni",
    )
    assert (kw["dtype"], kw["x"], kw["trust_remote_code"]) == ("float32", 1, False)
    assert "gpu_memory_utilization" not in kw  # None: vLLM's default, not an invalid None
    assert "logprobs_mode" not in kw and "max_logprobs" not in kw
    default = ra.rollout_actor_kwargs(CPU, pretrain="pol", tensor_parallel_size=1, max_model_len=64)
    assert default["dtype"] == "bfloat16"  # OpenRLHF's choice when the caller says nothing


def test_actor_kwargs_logprobs_mode_as_openrlhf_sets_it():
    kw = ra.rollout_actor_kwargs(
        CPU, pretrain="p", tensor_parallel_size=1, max_model_len=8, logprobs_mode="processed_logprobs"
    )
    assert (kw["logprobs_mode"], kw["max_logprobs"]) == ("processed_logprobs", 1)
    more = ra.rollout_actor_kwargs(
        CPU,
        pretrain="p",
        tensor_parallel_size=1,
        max_model_len=8,
        logprobs_mode="processed_logprobs",
        engine_kwargs={"max_logprobs": -1},
    )
    assert more["max_logprobs"] == -1
    with pytest.raises(ValueError, match="logprobs_mode is given twice"):
        ra.rollout_actor_kwargs(
            CPU,
            pretrain="p",
            tensor_parallel_size=1,
            max_model_len=8,
            logprobs_mode="raw_logprobs",
            engine_kwargs={"logprobs_mode": "processed_logprobs"},
        )


@pytest.mark.parametrize(
    ("key", "named"),
    [("max_model_len", "max_model_len"), ("model", "pretrain"), ("num_gpus", "the placement"), ("seed", "seed")],
)
def test_actor_kwargs_refuse_engine_kwargs_that_we_set(key, named):
    with pytest.raises(ValueError, match=rf"'{key}' \(set by {named}"):
        ra.rollout_actor_kwargs(CPU, pretrain="p", tensor_parallel_size=1, max_model_len=8, engine_kwargs={key: 1})


# ---------------------------------------------------------------- actor creation, Ray replaced by recorders


class _FakeActorClass:
    """Stands in for RolloutRayActor: records `.options(...).remote(**kwargs)`."""

    def __init__(self):
        self.created: list[tuple[dict, dict]] = []

    def options(self, **options):
        return types.SimpleNamespace(remote=lambda **kwargs: self._remote(options, kwargs))

    def _remote(self, options, kwargs):
        self.created.append((options, kwargs))
        return f"engine-{len(self.created) - 1}"


def _forbidden(*args, **kwargs):
    raise AssertionError("OpenRLHF's create_vllm_engines was called; our engines must not need it")


@pytest.fixture
def fake_ray(monkeypatch):
    """A 'cluster' whose resources a test sets; placement groups, the actor class and the stack check recorded."""
    import importlib

    import ray
    from openrlhf.trainer.ray import utils as openrlhf_ray_utils
    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_pilaf.utils import openrlhf_patches

    ray_pg = importlib.import_module("ray.util.placement_group")  # `ray.util.placement_group` is also a function
    rec = types.SimpleNamespace(resources={"CPU": 4}, groups=[], stack_checks=[], actor=_FakeActorClass(), calls=[])

    def placement_group(bundles, strategy):
        rec.groups.append((bundles, strategy))
        return types.SimpleNamespace(ready=lambda: "ready", bundles=bundles)

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: dict(rec.resources))
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    monkeypatch.setattr(ray_pg, "placement_group", placement_group)
    # OpenRLHF's helper groups bundles by node from Ray's placement table; here every bundle is on one node
    monkeypatch.setattr(openrlhf_ray_utils, "get_bundle_indices", lambda pg, i, n: list(range(i * n, (i + 1) * n)))
    monkeypatch.setattr(vllm_engine, "RolloutRayActor", rec.actor)
    monkeypatch.setattr(vllm_engine, "create_vllm_engines", _forbidden)
    monkeypatch.setattr(vllm_engine, "batch_vllm_engine_call", lambda engines, method: rec.calls.append(method))
    monkeypatch.setattr(openrlhf_patches, "require_patches", lambda cpu_stack: rec.stack_checks.append(cpu_stack))
    return rec


ARGS = {"num_engines": 2, "pretrain": "pol", "seed": 7, "max_model_len": 64}


def test_cpu_cluster_gets_cpu_bundles_and_our_worker_extension(fake_ray):
    engines = ra.create_rollout_engines(tensor_parallel_size=1, engine_kwargs={"dtype": "float32"}, **ARGS)
    assert engines == ["engine-0", "engine-1"]
    assert fake_ray.groups == [([{"CPU": 1}, {"CPU": 1}], "PACK")]
    assert fake_ray.stack_checks == [True]  # GPU-less: the CPU stack's patches are required
    for i, (options, kwargs) in enumerate(fake_ray.actor.created):
        assert (options["num_cpus"], options["num_gpus"]) == (1, 0)
        assert options["scheduling_strategy"].placement_group_bundle_index == i
        assert kwargs["seed"] == 7 + i and kwargs["bundle_indices"] is None
        assert kwargs["worker_extension_cls"] == PILAF_WORKER_EXTENSION and kwargs["dtype"] == "float32"
    assert fake_ray.calls == []


def test_gpu_cluster_places_tp_ranks_as_openrlhf_does(fake_ray):
    fake_ray.resources = {"CPU": 16, "GPU": 4}
    ra.create_rollout_engines(tensor_parallel_size=2, vllm_enable_sleep=True, **ARGS)
    assert fake_ray.groups == [([GPU_BUNDLE] * 4, "PACK")]
    assert fake_ray.stack_checks == [False]  # a GPU install needs no patch
    (opt0, kw0), (opt1, kw1) = fake_ray.actor.created
    assert (opt0["num_gpus"], kw0["num_gpus"], kw0["distributed_executor_backend"]) == (0, 1, "ray")
    assert (kw0["bundle_indices"], kw1["bundle_indices"]) == ([0, 1], [2, 3])
    assert opt1["scheduling_strategy"].placement_group_bundle_index == 2
    assert fake_ray.calls == ["sleep"]


def test_hybrid_engines_share_the_callers_group(fake_ray):
    fake_ray.resources = {"CPU": 16, "GPU": 2}
    shared = types.SimpleNamespace(name="caller's group")
    ra.create_rollout_engines(tensor_parallel_size=1, shared_pg=shared, **ARGS)
    assert fake_ray.groups == []
    for options, kwargs in fake_ray.actor.created:
        assert options["scheduling_strategy"].placement_group is shared
        assert (options["num_gpus"], kwargs["num_gpus"]) == (0.2, 0.2)


def test_a_missing_patch_is_refused_before_any_actor_or_group(fake_ray, monkeypatch):
    from openrlhf_pilaf.utils import openrlhf_patches

    def missing(cpu_stack):
        raise openrlhf_patches.PatchError("0005 is not applied; run `openrlhf-pilaf-patch`")

    monkeypatch.setattr(openrlhf_patches, "require_patches", missing)
    with pytest.raises(openrlhf_patches.PatchError, match="openrlhf-pilaf-patch"):
        ra.create_rollout_engines(tensor_parallel_size=1, **ARGS)
    assert fake_ray.groups == [] and fake_ray.actor.created == []


def test_ray_must_be_initialised(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match=r"ray.init\(\)"):
        ra.create_rollout_engines(tensor_parallel_size=1, **ARGS)


def test_interpolated_engines_go_through_the_same_path(fake_ray, tiny_suite):
    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.launch import create_interpolated_vllm_engines

    cfg = InterpolatedEngineConfig(reference_path=str(tiny_suite.reference), logprobs="sampled")
    create_interpolated_vllm_engines(
        cfg,
        pretrain=str(tiny_suite.policy),
        tensor_parallel_size=1,
        engine_kwargs={"max_logprobs": -1},
        **{k: v for k, v in ARGS.items() if k != "pretrain"},
    )
    for _, kwargs in fake_ray.actor.created:
        assert kwargs["worker_extension_cls"] == PILAF_WORKER_EXTENSION
        assert kwargs["hf_overrides"] == cfg.hf_overrides("LlamaForCausalLM")
        assert (kwargs["logprobs_mode"], kwargs["max_logprobs"]) == ("processed_logprobs", -1)


def test_no_patch_adds_the_old_create_vllm_engines_hooks():
    """GPU users run an unpatched OpenRLHF: nothing of ours may depend on a hook only a patch adds."""
    from openrlhf_pilaf.utils.openrlhf_patches import patch_files

    for patch in patch_files():
        added = [line for line in Path(patch).read_text().splitlines() if line.startswith("+")]
        assert not any("worker_extension_cls" in line or "engine_kwargs" in line for line in added), patch.name


def _openrlhf_positional_args() -> tuple:
    """create_vllm_engines' positional arguments as OpenRLHF 0.11.2's train_ppo_ray passes them (L67-83)."""
    # num_engines, tensor_parallel_size, pretrain, seed, full_determinism, enable_prefix_caching, enforce_eager,
    # max_model_len, shared_pg, gpu_memory_utilization, vllm_enable_sleep, logprobs_mode
    return (2, 1, "pol", 7, False, True, True, 96, None, 0.9, False, "processed_logprobs")


def test_stands_in_for_openrlhfs_create_vllm_engines_with_its_signature():
    import inspect

    from openrlhf.trainer.ray import vllm_engine

    def params(fn):
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(ra.create_vllm_engines_like_openrlhf) == params(vllm_engine.create_vllm_engines)


def test_openrlhf_ppo_arguments_start_our_engines_with_openrlhfs_engine_settings(fake_ray):
    engines = ra.create_vllm_engines_like_openrlhf(
        *_openrlhf_positional_args(), agent_func_path=None, remote_rm_url="http://rm", max_images_per_prompt=0
    )
    assert engines == ["engine-0", "engine-1"]
    assert fake_ray.groups == [([{"CPU": 1}, {"CPU": 1}], "PACK")]
    for i, (_, kwargs) in enumerate(fake_ray.actor.created):
        assert kwargs["worker_extension_cls"] == PILAF_WORKER_EXTENSION  # OpenRLHF's would be its WorkerWrap
        assert (kwargs["dtype"], kwargs["trust_remote_code"]) == ("bfloat16", True)  # as create_vllm_engines
        assert (kwargs["seed"], kwargs["max_model_len"], kwargs["model"]) == (7 + i, 96, "pol")
        assert (kwargs["enable_prefix_caching"], kwargs["enforce_eager"]) == (True, True)
        assert (kwargs["gpu_memory_utilization"], kwargs["remote_rm_url"]) == (0.9, "http://rm")
        assert (kwargs["logprobs_mode"], kwargs["max_logprobs"]) == ("processed_logprobs", 1)


def test_multimodal_ppo_rollouts_are_refused_naming_the_flag(fake_ray):
    with pytest.raises(ValueError, match=r"--data.max_images_per_prompt 2: multimodal"):
        ra.create_vllm_engines_like_openrlhf(*_openrlhf_positional_args(), max_images_per_prompt=2)
    assert fake_ray.actor.created == []
