"""The online DPO launcher's refusals (each names its flag, before anything starts), the resumable prompt
stream, plan restriction for a resumed step, the driver's checkpoint state, and the evaluation summary."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from tests.online_dpo_helpers import launcher_argv, write_prompts


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _parse(argv):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config

    return parse_config(argv)


@pytest.mark.parametrize(
    "extra,match",
    [
        (("--pilaf.sampler", "nope"), r"--pilaf\.sampler 'nope' is not a sampler"),
        (("--pilaf.n", "4"), r"--pilaf\.n is not a setting of --pilaf\.sampler pilaf"),
        (("--pilaf.sampler", "best_of_n", "--pilaf.n", "1"), r"--pilaf\.n must be an integer >= 2"),
        (("--pilaf.mix_prob", "1.5"), r"--pilaf\.mix_prob is a probability"),
        (("--dpo.beta", "0"), r"--dpo\.beta must be > 0"),
        (("--dpo.beta", "-0.1"), r"--dpo\.beta must be > 0"),
        (("--dpo.loss", "ipo", "--dpo.label_smoothing", "0.1"), r"--dpo\.label_smoothing applies to --dpo\.loss dpo"),
        (("--vllm.num_engines", "2"), r"--engine torch runs without vLLM, but --vllm\.num_engines"),
        (("--rollout.batch_size", "3"), r"--rollout\.batch_size 3 .* multiple of --train\.batch_size 2"),
        (("--train.micro_batch_size", "4"), r"--train\.batch_size 2 must be a multiple of --train\.micro_batch_size 4"),
        (
            ("--reward.remote_url", "http://x", "--reward.model_name_or_path", "rm"),
            "give only one of --reward.model_name_or_path and --reward.remote_url",
        ),
        (("--eval.steps", "5"), r"--eval\.steps needs --eval\.dataset"),
        (("--rollout.max_new_tokens", "64"), r"--rollout\.max_new_tokens 64 leaves no room .* --data\.max_len 64"),
        (("--rollout.top_k", "0"), r"--rollout\.top_k must be -1"),
        (("--actor.num_gpus_per_node", "2"), "--engine torch runs one learner process"),
        (
            ("--salsa.ingredients", "a", "b", "--ref.model_name_or_path", "r"),
            r"--salsa\.ingredients builds the reference; do not also give --ref",
        ),
    ],
)
def test_contradictions_are_refused_naming_the_flag(tiny_suite, prompts, tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        _parse(launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", *extra))


def test_unknown_flags_are_refused_not_ignored(tiny_suite, prompts, tmp_path, capsys):
    from openrlhf_pilaf.cli.train_dpo_ray import main

    with pytest.raises(SystemExit) as e:
        main(launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", "--algo.kl.init_coef", "0.1"))
    assert e.value.code == 2 and "unrecognized arguments: --algo.kl.init_coef" in capsys.readouterr().err


@pytest.mark.openrlhf
@pytest.mark.parametrize("flag", ["--ref.model_name_or_path", "--reward.model_name_or_path"])
def test_models_with_another_tokenizer_are_refused_before_loading(tiny_suite, prompts, tmp_path, capsys, flag):
    from openrlhf_pilaf.cli.train_dpo_ray import main
    from openrlhf_pilaf.testing.tiny_models import build_foreign_tokenizer_reference

    foreign = str(build_foreign_tokenizer_reference(tiny_suite.root.parent))
    argv = launcher_argv(tiny_suite, prompts, tmp_path / "run", "pilaf", flag, foreign)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: {flag}" in err and foreign in err and str(tiny_suite.policy) in err
    assert not (tmp_path / "run" / "pairs.jsonl").exists(), "refused before the run directory was written"


@pytest.mark.openrlhf
def test_labels_already_on_disk_are_not_overwritten(tiny_suite, prompts, tmp_path, capsys):
    from openrlhf_pilaf.cli.train_dpo_ray import main
    from openrlhf_pilaf.pairs import PairLog
    from tests.test_pair_log import _row

    PairLog(tmp_path / "run" / "pairs.jsonl").append(_row("s000001-p00000"))
    assert main(launcher_argv(tiny_suite, prompts, tmp_path / "run", "pilaf")) == 2
    assert "--ckpt.load_enable" in capsys.readouterr().err
    assert len(PairLog(tmp_path / "run" / "pairs.jsonl")) == 1


@pytest.mark.ray
def test_a_cluster_that_cannot_hold_the_flags_is_refused_at_once(ray_cluster, tiny_suite, prompts, tmp_path):
    from openrlhf_pilaf.trainer.online_dpo.runtime_ray import start_ray
    from openrlhf_pilaf.utils.ray_resources import InsufficientGpusError, check_gpus

    cfg = _parse(launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", "--vllm.num_engines", "3", engine="vllm"))
    with pytest.raises(ValueError, match=r"places 6 ranks on CPUs .*--vllm\.num_engines 3.* has 4 CPUs"):
        start_ray(cfg)  # the module's cluster: 4 CPUs, no GPU
    # on a GPU cluster the same arithmetic counts GPUs, naming every flag
    from openrlhf_pilaf.trainer.online_dpo.runtime_ray import gpu_requests

    with pytest.raises(InsufficientGpusError, match=r"asks for 6 GPUs .*--vllm\.num_engines 3.* has 4"):
        check_gpus(gpu_requests(cfg), 4)
    check_gpus(gpu_requests(cfg), 6)


def test_prompt_stream_is_resumable_and_episodes_reshuffle():
    from openrlhf_pilaf.trainer.dpo.prompts import Prompt, PromptStream

    prompts = [Prompt(f"p{i}", None, (i + 1,)) for i in range(10)]
    a = PromptStream(prompts, seed=3, num_episodes=2)
    first = [[p.text for p in a.next_batch(4)] for _ in range(2)]
    state = a.state_dict()
    rest = [[p.text for p in b] for b in iter(lambda: a.next_batch(4), None)]
    assert len(rest) == 3 and a.next_batch(4) is None  # 20 prompts: 5 full batches of 4
    b = PromptStream(prompts, seed=3, num_episodes=2)
    b.load_state_dict(state)
    assert [[p.text for p in x] for x in iter(lambda: b.next_batch(4), None)] == rest
    episode0 = [t for batch in first for t in batch] + rest[0][:2]
    assert sorted(episode0) == sorted(p.text for p in prompts)  # every prompt once per episode
    assert rest[0][2:] + rest[1] + rest[2] != episode0  # the second episode has its own order


def test_subset_plan_keeps_the_whole_batch_decisions():
    from openrlhf_pilaf.samplers import SamplerConfig
    from openrlhf_pilaf.trainer.dpo import Schedule
    from openrlhf_pilaf.trainer.dpo.collect import subset_plan

    sampler = SamplerConfig(sampler="pilaf").build(0.1)
    plan = sampler.plan([[1], [2], [3], [4]], np.random.default_rng([0, 7]))
    sub = subset_plan(plan, [1, 3])
    assert [g.prompt_index for g in sub.groups] == [1, 3]
    assert [g.branches for g in sub.groups] == [plan.groups[1].branches, plan.groups[3].branches]
    assert [g.swap for g in sub.groups] == [plan.groups[1].swap, plan.groups[3].swap]
    assert [s.w for s in sub.generation.samples] == [
        plan.generation.samples[i].w for g in (1, 3) for i in plan.groups[g].sample_indices
    ]
    online = Schedule.online(steps=12, batch_size=4, eval_steps=-1)
    assert online.pair_id(12, 3) == "s000012-p00003"


def test_run_state_is_written_atomically(tmp_path):
    from openrlhf_pilaf.trainer.dpo import STATE_FILE, DriverState, Schedule

    online = Schedule.online(steps=5, batch_size=8, eval_steps=-1)
    assert DriverState.load(tmp_path, online, num_prompts=20) is None
    state = DriverState(mode="online", prompts_per_round=8, step=3, rounds_done=3, tag="global_step3", labels_spent=24)
    state.save(tmp_path)
    assert DriverState.load(tmp_path, online, num_prompts=20) == state
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def _iterative(per_round: int = 6):
    from openrlhf_pilaf.trainer.dpo import Schedule

    return Schedule.iterative(
        rounds=2,
        prompts_per_round=per_round,
        rollout_batch_size=3,
        epochs=2,
        train_batch_size=2,
        update_reference=False,
    )


def test_state_files_of_the_two_former_loops_still_resume(tmp_path):
    """Run directories written by the online and the iterative loop before they became one driver."""
    from openrlhf_pilaf.trainer.dpo import DriverState, Schedule

    online_dir, iterative_dir = tmp_path / "online", tmp_path / "iterative"
    online_dir.mkdir()
    iterative_dir.mkdir()
    # 20 prompts, batches of 8: after 3 steps the stream is in episode 1 at prompt 4
    old_online = {"step": 3, "prompt_stream": {"episode": 1, "index": 4}, "labels_spent": 48, "policy_tokens": 7,
                  "reference_tokens": 5, "tag": "global_step3"}  # fmt: skip
    (online_dir / "driver_state.json").write_text(json.dumps(old_online))
    state = DriverState.load(online_dir, Schedule.online(steps=5, batch_size=8, eval_steps=-1), num_prompts=20)
    assert (state.mode, state.prompts_per_round, state.rounds_done, state.step, state.round) == ("online", 8, 3, 3, 0)
    assert (state.labels_spent, state.policy_tokens, state.reference_tokens, state.tag) == (48, 7, 5, "global_step3")

    old_iterative = {"rounds_done": 1, "round": 2, "epoch": 1, "batch": 1, "step": 9, "tag": "global_step9"}
    (iterative_dir / "driver_state.json").write_text(json.dumps(old_iterative))
    state = DriverState.load(iterative_dir, _iterative(), num_prompts=20)
    assert (state.mode, state.rounds_done, state.round, state.epoch, state.batch, state.step) == (
        "iterative", 1, 2, 1, 1, 9,
    )  # fmt: skip


def test_a_checkpoint_the_flags_cannot_resume_is_refused_naming_what_changed(tmp_path):
    from openrlhf_pilaf.trainer.dpo import DriverState, Schedule, StateMismatch

    (tmp_path / "driver_state.json").write_text(
        json.dumps({"step": 3, "prompt_stream": {"episode": 1, "index": 4}, "tag": "global_step3"})
    )
    with pytest.raises(StateMismatch, match=re.escape("--rollout.batch_size 8, this run has 4")):
        DriverState.load(tmp_path, Schedule.online(steps=5, batch_size=4, eval_steps=-1), num_prompts=20)
    resume_online = "--dpo.mode online checkpoint; resume it with --dpo.mode online"
    with pytest.raises(StateMismatch, match=re.escape(resume_online)):
        DriverState.load(tmp_path, _iterative(), num_prompts=20)
    with pytest.raises(StateMismatch, match="the prompt set changed"):  # 3 x 8 prompts are not episode 1, prompt 4
        DriverState.load(tmp_path, Schedule.online(steps=5, batch_size=8, eval_steps=-1), num_prompts=30)
    DriverState(mode="iterative", prompts_per_round=6, tag="round1", rounds_done=1).save(tmp_path)
    with pytest.raises(StateMismatch, match=re.escape("--dpo.prompts_per_round 6, this run has 4")):
        DriverState.load(tmp_path, _iterative(4), num_prompts=20)
    with pytest.raises(StateMismatch, match=re.escape("--dpo.mode iterative checkpoint")):
        DriverState.load(tmp_path, Schedule.online(steps=5, batch_size=6, eval_steps=-1), num_prompts=20)


def test_round_prompts_are_the_stream_the_online_loop_took():
    """Round k of the driver takes the prompts the former online loop's k-th batch took from its resumable stream."""
    from openrlhf_pilaf.trainer.dpo.prompts import Prompt, PromptStream
    from openrlhf_pilaf.trainer.dpo.rounds import round_prompts, stream_position

    prompts = [Prompt(f"p{i}", None, (i + 1,)) for i in range(10)]
    stream = PromptStream(prompts, seed=5, num_episodes=3)
    for k in range(1, 8):  # batches of 4 cross episodes at 10 and 20 prompts
        batch = stream.next_batch(4)
        assert round_prompts(prompts, seed=5, num_episodes=3, round_=k, per_round=4) == batch
        assert stream_position(10, 4 * k) == stream.state_dict()
    with pytest.raises(ValueError, match="exhausted"):
        round_prompts(prompts, seed=5, num_episodes=3, round_=8, per_round=4)


def test_evaluation_summary():
    from openrlhf_pilaf.trainer.online_dpo.evaluation import summarize

    s = summarize([1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 1.5, 1.5], beta=0.1)
    assert s["reward"] == 2.5 and s["kl"] == 1.0 and s["J"] == pytest.approx(2.5 - 0.1)
    assert s["reward_ci95"] == pytest.approx(1.96 * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert s["kl_se"] == pytest.approx(np.std([0.5, 0.5, 1.5, 1.5], ddof=1) / 2) and s["n"] == 4
    assert math.isnan(summarize([1.0], [0.0], beta=0.1)["reward_ci95"])
    with pytest.raises(ValueError):
        summarize([1.0], [], beta=0.1)


def test_flag_groups_are_declared_once_by_the_config_fields(tiny_suite, prompts, tmp_path):
    """GROUPS, the parser and parse_config all come from OnlineDPOConfig's fields (one list)."""
    import dataclasses

    from openrlhf_pilaf.cli.train_dpo_ray import make_parser
    from openrlhf_pilaf.trainer.online_dpo.config import GROUPS, OnlineDPOConfig, parse_online_dpo_argv
    from openrlhf_pilaf.utils.config_cli import group_fields, group_of

    fields = [f for f in dataclasses.fields(OnlineDPOConfig) if f.init]
    names = [f.name for f in fields if f.name not in ("engine", "vllm_flags_given")]
    assert list(group_fields(OnlineDPOConfig)) == names and len(GROUPS) == 17
    assert [group_of(cls) for cls in GROUPS][:3] == ["actor", "actor.adam", "ref"]
    titles = [g.title for g in make_parser()._action_groups]
    assert titles[-len(GROUPS) :] == [group_of(cls) for cls in GROUPS]  # --help order is the field order

    argv = launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", "--vllm.num_engines", "1", "--engine", "vllm")
    ours, cli = parse_online_dpo_argv(argv), _parse(argv)
    for name in group_fields(OnlineDPOConfig):
        assert getattr(ours, name) == getattr(cli, name), name
    assert ours.engine == cli.engine == "vllm"
    assert ours.vllm_flags_given == cli.vllm_flags_given == ("--vllm.num_engines",)
