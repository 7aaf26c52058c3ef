"""The GPU pre-flight: what OpenRLHF 0.11.2's PPO asks Ray for, and the refusal that names the flags."""

from __future__ import annotations

import runpy
from types import SimpleNamespace

import pytest

from openrlhf_pilaf.utils.ray_resources import (
    GpuRequest,
    InsufficientCpusError,
    InsufficientGpusError,
    InsufficientResourcesError,
    check_cpus,
    check_gpus,
    openrlhf_ppo_gpu_requests,
    total_gpus,
)


def _ppo_args(**over):
    """The parts of train()'s namespace the count reads, with OpenRLHF 0.11.2's defaults (8 GPUs a group)."""
    flat = {
        "actor.num_nodes": 1,
        "actor.num_gpus_per_node": 8,
        "ref.num_nodes": 1,
        "ref.num_gpus_per_node": 8,
        "critic.num_nodes": 1,
        "critic.num_gpus_per_node": 8,
        "critic.model_name_or_path": None,
        "reward.num_nodes": 1,
        "reward.num_gpus_per_node": 8,
        "reward.remote_url": None,
        "vllm.num_engines": None,
        "vllm.tensor_parallel_size": 1,
        "algo.kl.init_coef": 0.01,
        "train.colocate_all": False,
        "train.colocate_actor_ref": False,
        "train.colocate_critic_reward": False,
        "train.async_enable": False,
    }
    flat.update({k.replace("__", "."): v for k, v in over.items()})
    root = SimpleNamespace()
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = root
        for p in parents:
            if not hasattr(node, p):
                setattr(node, p, SimpleNamespace())
            node = getattr(node, p)
        setattr(node, leaf, value)
    return root


def _summary(requests):
    return [(r.what.split(" (")[0], r.gpus) for r in requests]


@pytest.mark.parametrize(
    ("over", "want"),
    [
        ({}, [("actor", 8), ("reference", 8), ("reward model", 8)]),
        ({"algo__kl__init_coef": 0.0, "reward__remote_url": ["http://rm"]}, [("actor", 8)]),
        (
            {"critic__model_name_or_path": "rm", "vllm__num_engines": 3, "vllm__tensor_parallel_size": 2},
            [("actor", 8), ("reference", 8), ("vLLM engines", 6), ("critic", 8), ("reward model", 8)],
        ),
        (
            {"train__colocate_actor_ref": True, "vllm__num_engines": 2},
            [("actor + reference", 8), ("vLLM engines", 2), ("reward model", 8)],
        ),
        ({"train__colocate_actor_ref": True, "algo__kl__init_coef": 0.0}, [("actor", 8), ("reward model", 8)]),
        (
            {"train__colocate_all": True, "vllm__num_engines": 8, "critic__model_name_or_path": "rm"},
            [("actor + reference + vLLM engines + critic + reward model", 8)],
        ),
        (  # async: the engines do not share the actor's placement group
            {"train__colocate_all": True, "train__async_enable": True, "vllm__num_engines": 2},
            [("actor + reference + reward model", 8), ("vLLM engines", 2)],
        ),
        (
            {
                "train__colocate_all": True,
                "train__colocate_critic_reward": True,
                "critic__model_name_or_path": "rm",
                "critic__num_gpus_per_node": 4,
                "vllm__num_engines": 8,
            },
            [("actor + reference + vLLM engines", 8), ("critic + reward model", 4)],
        ),
        (
            {"train__colocate_critic_reward": True, "critic__model_name_or_path": "rm", "critic__num_nodes": 2},
            [("actor", 8), ("reference", 8), ("critic + reward model", 16)],
        ),
        (  # colocating critic and reward means nothing without a critic: the reward model stands alone
            {"train__colocate_critic_reward": True},
            [("actor", 8), ("reference", 8), ("reward model", 8)],
        ),
        ({"actor__num_nodes": 2, "ref__num_gpus_per_node": 2}, [("actor", 16), ("reference", 2), ("reward model", 8)]),
    ],
)
def test_openrlhf_ppo_requests_follow_its_placement(over, want):
    assert _summary(openrlhf_ppo_gpu_requests(_ppo_args(**over))) == want


def test_vllm_on_cpu_asks_for_no_gpu():
    args = _ppo_args(vllm__num_engines=2)
    assert "vLLM engines" in [w for w, _ in _summary(openrlhf_ppo_gpu_requests(args))]
    assert "vLLM engines" not in [w for w, _ in _summary(openrlhf_ppo_gpu_requests(args, vllm_uses_gpus=False))]


def test_refusal_names_every_flag_and_the_totals():
    requests = openrlhf_ppo_gpu_requests(
        _ppo_args(actor__num_gpus_per_node=1, ref__num_gpus_per_node=2, vllm__num_engines=1)
    )
    assert total_gpus(requests) == 1 + 2 + 1 + 8
    with pytest.raises(InsufficientGpusError) as err:
        check_gpus(requests, 4)
    text = str(err.value)
    assert "asks for 12 GPUs" in text and "the Ray cluster has 4" in text
    for flag in (
        "--actor.num_gpus_per_node 1",
        "--ref.num_gpus_per_node 2",
        "--vllm.num_engines 1",
        "--reward.num_gpus_per_node 8",
        "--actor.num_nodes 1",
    ):
        assert flag in text
    assert isinstance(err.value, ValueError)
    check_gpus(requests, 12)  # exactly enough
    check_gpus(requests, 12.0, where="this machine")


def test_a_general_request_list_and_fractional_clusters():
    requests = [GpuRequest("policy", (("--policy.gpus", 2),)), GpuRequest("oracle", (("--oracle.gpus", 1),))]
    with pytest.raises(
        InsufficientGpusError,
        match=r"asks for 3 GPUs \(policy: --policy\.gpus 2; oracle: --oracle\.gpus 1\), but this machine has 2\.5",
    ):
        check_gpus(requests, 2.5, where="this machine")
    check_gpus([], 0)


def test_cpu_ranks_are_checked_against_the_clusters_cpus_naming_the_flags():
    requests = openrlhf_ppo_gpu_requests(
        _ppo_args(
            actor__num_gpus_per_node=1, ref__num_gpus_per_node=1, reward__num_gpus_per_node=2, vllm__num_engines=1
        )
    )
    check_cpus(requests, 6, controllers=1)  # 1 + 1 + 1 engine + 2 + the controller
    with pytest.raises(InsufficientCpusError) as err:
        check_cpus(requests, 5, controllers=1)
    text = str(err.value)
    assert "places 5 ranks on CPUs" in text and "+ 1 for the controller" in text and "has 5 CPUs" in text
    for flag in ("--actor.num_gpus_per_node 1", "--reward.num_gpus_per_node 2", "--vllm.num_engines 1"):
        assert flag in text
    assert "--num-cpus 6" in text
    assert isinstance(err.value, InsufficientResourcesError) and not isinstance(err.value, InsufficientGpusError)
    check_cpus(requests, 5)  # no controller counted


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_factors_are_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"--actor\.num_gpus_per_node: must be a positive integer"):
        GpuRequest("actor", (("--actor.num_nodes", 1), ("--actor.num_gpus_per_node", value)))


# ---------------------------------------------------------- against OpenRLHF's own parser and fix-ups
class _Captured(Exception):
    pass


def _openrlhf_train_args(monkeypatch, argv):
    """The namespace OpenRLHF's entry point hands to train(), from its real parser (no Ray started)."""
    import openrlhf.utils as openrlhf_utils
    import ray

    def capture(args):
        raise _Captured(args)

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # train() skips ray.init
    monkeypatch.setattr(openrlhf_utils, "get_strategy", capture)
    monkeypatch.setattr("sys.argv", ["train_ppo_ray", *argv])
    with pytest.raises(_Captured) as got:
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__")
    return got.value.args[0]


@pytest.mark.openrlhf
def test_counts_openrlhfs_real_defaults_and_fixups(monkeypatch):
    # gae (the default estimator) makes the reward model the critic: train() then asks for four groups
    args = _openrlhf_train_args(monkeypatch, ["--actor.model_name_or_path", "p", "--reward.model_name_or_path", "r"])
    assert _summary(openrlhf_ppo_gpu_requests(args)) == [
        ("actor", 8),
        ("reference", 8),
        ("critic", 8),
        ("reward model", 8),
    ]
    args = _openrlhf_train_args(
        monkeypatch,
        [
            "--actor.model_name_or_path",
            "p",
            "--reward.remote_url",
            "http://rm",
            "--algo.advantage.estimator",
            "reinforce",
            "--train.colocate_all",
            "--vllm.num_engines",
            "8",
            "--rollout.batch_size",
            "8",
        ],
    )
    assert _summary(openrlhf_ppo_gpu_requests(args)) == [("actor + reference + vLLM engines", 8)]
