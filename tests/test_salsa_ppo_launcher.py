"""The SALSA PPO launcher: our flags build a soup and route it into OpenRLHF's reference actor."""

from __future__ import annotations

import runpy

import pytest
import torch

pytestmark = [pytest.mark.openrlhf]


def _launch(tiny_suite, tmp_path, *extra):
    from openrlhf_pilaf.cli.train_ppo_ray import prepare_launch

    argv = [
        "--salsa.ingredients",
        str(tiny_suite.policy),
        str(tiny_suite.policy_alt),
        "--salsa.weights",
        "3",
        "1",
        "--salsa.output",
        str(tmp_path / "soup"),
        "--actor.model_name_or_path",
        str(tiny_suite.policy),
        "--rollout.batch_size",
        "8",
        *extra,
    ]
    return prepare_launch(argv)


def test_soup_goes_to_the_reference_and_other_flags_pass_through(tiny_suite, tmp_path):
    from safetensors.torch import load_file

    launch = _launch(tiny_suite, tmp_path)
    assert launch.reference_path == tmp_path / "soup"
    assert launch.openrlhf_argv == ["--actor.model_name_or_path", str(tiny_suite.policy), "--rollout.batch_size", "8"]
    soup, a, b = (
        load_file(str(p / "model.safetensors"))
        for p in (launch.reference_path, tiny_suite.policy, tiny_suite.policy_alt)
    )
    for k in soup:
        torch.testing.assert_close(soup[k], 0.75 * a[k] + 0.25 * b[k], rtol=1e-6, atol=1e-6)


def test_init_policy_starts_the_actor_from_the_soup(tiny_suite, tmp_path):
    from openrlhf_pilaf.utils.argv import flag_value

    launch = _launch(tiny_suite, tmp_path, "--salsa.init_policy")
    assert flag_value(launch.openrlhf_argv, "--actor.model_name_or_path") == str(launch.reference_path)


@pytest.mark.parametrize(
    "argv,match",
    [
        (["--salsa.ingredients", "a"], "at least two"),
        (["--salsa.ingredients", "a", "b", "--salsa.weights", "1"], "1 values for 2"),
        (["--salsa.init_policy"], "ingredients is empty"),
        (["--salsa.ingredients", "a", "b", "--algo.kl.init_coef", "0"], "disables it"),
        (["--salsa.ingredients", "a", "b"], "is required"),
    ],
)
def test_bad_salsa_flags_are_refused_before_anything_is_built(argv, match):
    from openrlhf_pilaf.cli.train_ppo_ray import prepare_launch

    with pytest.raises(ValueError, match=match):
        prepare_launch(argv)


def test_no_salsa_is_plain_openrlhf():
    from openrlhf_pilaf.cli.train_ppo_ray import prepare_launch

    launch = prepare_launch(["--actor.model_name_or_path", "x", "--algo.kl.init_coef", "0"])
    assert launch.reference_path is None and launch.openrlhf_argv == [
        "--actor.model_name_or_path",
        "x",
        "--algo.kl.init_coef",
        "0",
    ]


@pytest.mark.ray
def test_openrlhf_ppo_entry_builds_our_reference_which_loads_the_soup(ray_cluster, tiny_suite, tmp_path):
    """OpenRLHF's train_ppo_ray module, executed after our wiring, picks up the soup reference actor;
    a real Ray actor of that class loads the soup, whose log-probs differ from the actor's."""
    import openrlhf.trainer.ray.launcher as launcher_module
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    from transformers import AutoTokenizer

    from openrlhf_pilaf.testing.deepspeed_cpu import strategy_args
    from openrlhf_pilaf.trainer.reference import use_reference_for_openrlhf_ppo
    from tests.test_reference_actor import _batch, _hf_logprobs

    launch = _launch(tiny_suite, tmp_path)
    original = launcher_module.ReferenceModelActor
    try:
        cls = use_reference_for_openrlhf_ppo(launch.reference_path)
        entry_globals = runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="not_main")
        assert entry_globals["ReferenceModelActor"] is cls
    finally:
        launcher_module.ReferenceModelActor = original

    actor = cls.options(num_gpus=0, num_cpus=1).remote(1, 0, None, None)
    strategy = DeepspeedStrategy(
        seed=0, micro_train_batch_size=2, train_batch_size=2, zero_stage=2, args=strategy_args(2)
    )
    ray_cluster.get(actor.init_model_from_pretrained.remote(strategy, str(tiny_suite.policy)))
    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    ids, attn, mask = _batch(tok)
    got = ray_cluster.get(actor.forward.remote(ids, mask, attn))
    assert torch.allclose(got, _hf_logprobs(launch.reference_path, ids, attn, mask), atol=1e-3)
    assert (got - _hf_logprobs(tiny_suite.policy, ids, attn, mask)).abs().max() > 0.1
    ray_cluster.kill(actor)
