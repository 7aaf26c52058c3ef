"""Online DPO end to end with `--engine torch` (one process: the PyTorch engine, a DeepSpeed learner, the
oracle and the pair log), for every sampler; SALSA as the reference; oracle faults; kill and resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch

from tests.online_dpo_helpers import KILLING_REWARD, launcher_argv, write_prompts
from tests.reward_server import ScriptedRewardServer

pytestmark = [pytest.mark.openrlhf]

BRANCHES = {
    "vanilla": {("policy", "policy")},
    "best_of_n": {("policy", "policy")},
    "hybrid": {("policy", "reference"), ("reference", "policy")},
    "pilaf": {("policy", "policy"), ("pi_plus", "pi_minus"), ("pi_minus", "pi_plus")},
}


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _prepare(argv):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo.run import prepare_run

    return prepare_run(parse_config(argv))


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("sampler", ["vanilla", "best_of_n", "hybrid", "pilaf"])
def test_two_steps_for_each_sampler(tiny_suite, prompts, tmp_path, sampler):
    from openrlhf_pilaf.trainer.online_dpo.run import execute

    extra = {
        "best_of_n": ("--pilaf.n", "4"),
        "pilaf": ("--eval.steps", "1", "--eval.dataset", str(prompts), "--eval.max_samples", "4"),
        "hybrid": ("--logger.tensorboard_dir", str(tmp_path / "tb")),
    }.get(sampler, ())
    run = _prepare(launcher_argv(tiny_suite, prompts, tmp_path / "run", sampler, *extra))
    learner, engine = run.parts.learner.learner, run.parts.raw_engine
    start, ref_start = _params(learner.hf_model), _params(engine.reference)
    history = execute(run, save_model=False)

    assert [h["step"] for h in history] == [1, 2]
    assert all(math.isfinite(h["loss"]) for h in history)
    trained = _params(learner.hf_model)
    moved = [n for n in start if not torch.equal(start[n], trained[n])]
    assert len(moved) == len(start), f"not every parameter was updated: {sorted(set(start) - set(moved))}"
    # the engine generates from the trained weights, bit for bit; its reference never moves
    for n, p in engine.policy.named_parameters():
        assert torch.equal(p, trained[n].to(p.dtype)), n
    for n, p in engine.reference.named_parameters():
        assert torch.equal(p, ref_start[n]), n

    rows = list(run.pair_log)
    assert [r["pair_id"] for r in rows] == [f"s{s:06d}-p{i:05d}" for s in (1, 2) for i in range(4)]
    assert {(r["branch_a"], r["branch_b"]) for r in rows} <= BRANCHES[sampler]
    w_of = {"policy": 0.0, "reference": -1.0, "pi_plus": 0.1, "pi_minus": -0.1}
    for r in rows:
        assert (r["w_a"], r["w_b"]) == (w_of[r["branch_a"]], w_of[r["branch_b"]])
        assert r["label"] in ("a", "b") and r["sampler"] == sampler
        assert math.isfinite(r["score_a"]) and math.isfinite(r["score_b"])
    # cost counters: forwards per pair follow the method's table (best-of-N with N = 4 here)
    interp = sum(r["branch_a"] in ("pi_plus", "pi_minus") for r in rows)
    want = {"vanilla": 2, "best_of_n": 4, "hybrid": 2, "pilaf": 2 + 2 * interp / len(rows)}[sampler]
    assert sum(h["forwards_per_pair"] for h in history) / 2 == pytest.approx(want)
    assert history[-1]["labels_spent"] == 2 * len(rows)
    # tokens x passes: what ran (the loop asks the engine for reference log-probs: one reference pass over every
    # row, the decode's at w != 0, a teacher-forced forward's at w = 0) and what sampling at each row's w needs (no
    # reference at w = 0, no policy at w = -1)
    tokens = sum(len(r["token_ids_a"]) + len(r["token_ids_b"]) for r in rows)
    needed_ref = sum(len(r[f"token_ids_{x}"]) for r in rows for x in "ab" if r[f"w_{x}"] != 0)
    needed_pol = sum(len(r[f"token_ids_{x}"]) for r in rows for x in "ab" if r[f"w_{x}"] != -1)
    last = history[-1]
    assert last["reference_tokens"] == last["policy_tokens"] >= last["policy_tokens_needed"]
    if sampler != "best_of_n":  # best-of-N keeps 2 of its N responses in the log; the counters count all N
        assert (last["policy_tokens"], last["reference_tokens"]) == (tokens, tokens)
        assert (last["policy_tokens_needed"], last["reference_tokens_needed"]) == (needed_pol, needed_ref)
    else:
        assert last["reference_tokens_needed"] == 0 and last["policy_tokens"] > tokens
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and metrics[0]["loss"] == pytest.approx(history[0]["loss"])
    if sampler == "hybrid":  # OpenRLHF's TensorboardLogger, under --logger.wandb.run_name
        assert list((tmp_path / "tb" / "online_dpo").glob("events.out.tfevents.*"))
    if sampler == "pilaf":  # --eval.steps 1: held-out reward, KL and J after every step
        evals = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
        assert [e["step"] for e in evals] == [0, 1, 2]  # step 0: the starting policy
        assert [e["pairs_labelled"] for e in evals] == [0, 4, 8] and evals[-1]["labels_spent"] == 16
        for e in evals:
            assert {"reward", "reward_ci95", "kl", "kl_se", "J", "beta", "n"} <= set(e) and e["n"] == 4
            assert e["J"] == pytest.approx(e["reward"] - 0.1 * e["kl"])


def test_hybrid_reference_response_keeps_the_logprobs_it_was_sampled_with(tiny_suite):
    import numpy as np

    from openrlhf_pilaf.engines.interface import GenerationParams
    from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine
    from openrlhf_pilaf.samplers import SamplerConfig

    engine = TorchInterpolatedEngine.from_pretrained(str(tiny_suite.policy), str(tiny_suite.reference))
    sampler = SamplerConfig(sampler="hybrid").build(0.1)
    plan = sampler.plan([[1, 4, 57, 74, 5], [1, 4, 92, 77, 5]], np.random.default_rng(0))
    samples = engine.generate(plan.generation, GenerationParams(max_new_tokens=6, reference_logprobs=True))
    pairs = sampler.pairs(plan, samples, step=0, pair_ids=["a", "b"])
    for group, pair in zip(plan.groups, pairs, strict=True):
        drawn = samples[group.sample_indices[1]]  # the w = -1 row
        ref = pair.a if pair.a.branch == "reference" else pair.b
        # at temperature 1 with no filter, the distribution a w = -1 row is drawn from is the reference itself
        assert ref.reference_logprobs == pytest.approx(tuple(drawn.sampled_logprobs), abs=1e-5)
        assert ref.reference_logprobs == tuple(drawn.reference_logprobs)


def test_salsa_soup_is_the_reference_of_learner_and_engine(tiny_suite, prompts, tmp_path):
    from safetensors.torch import load_file

    from openrlhf_pilaf.trainer.online_dpo.run import execute

    argv = launcher_argv(
        tiny_suite,
        prompts,
        tmp_path / "run",
        "pilaf",
        "--salsa.ingredients",
        str(tiny_suite.policy),
        str(tiny_suite.policy_alt),
        "--salsa.output",
        str(tmp_path / "soup"),
        "--train.max_steps",
        "1",
    )
    run = _prepare(argv)
    assert run.reference_path == str(tmp_path / "soup")
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    for n, p in run.parts.raw_engine.reference.named_parameters():
        assert torch.equal(p, soup[n].to(p.dtype)), n
    execute(run, save_model=False)
    rows = list(run.pair_log)
    assert len(rows) == 4 and all(math.isfinite(r["logp_ref_a"]) for r in rows)


def test_salsa_init_policy_starts_the_policy_from_the_soup(tiny_suite, prompts, tmp_path):
    from safetensors.torch import load_file

    soup_dir = tmp_path / "soup"
    extra = ("--salsa.ingredients", str(tiny_suite.policy), str(tiny_suite.policy_alt), "--salsa.init_policy")
    run = _prepare(
        launcher_argv(tiny_suite, prompts, tmp_path / "run", "vanilla", *extra, "--salsa.output", str(soup_dir))
    )
    assert run.cfg.actor.model_name_or_path == str(soup_dir)
    soup = load_file(str(soup_dir / "model.safetensors"))
    for module in (run.parts.raw_engine.policy, run.parts.learner.learner.hf_model):
        for n, p in module.named_parameters():
            assert torch.equal(p, soup[n].to(p.dtype)), n


@pytest.fixture()
def reward_server():
    with ScriptedRewardServer(score=lambda q: len(q) % 7).running() as server:
        yield server


def test_oracle_faults_retry_then_fail_naming_the_pairs(tiny_suite, prompts, tmp_path, reward_server):
    from openrlhf_pilaf.oracle import OracleError
    from openrlhf_pilaf.trainer.online_dpo.run import execute

    remote = ("--reward.remote_url", reward_server.url, "--oracle.retry_backoff", "0.01", "--oracle.batch_size", "4")
    # fails twice, then answers: the run goes on
    reward_server.script = ["500", "500"]
    run = _prepare(launcher_argv(tiny_suite, prompts, tmp_path / "ok", "vanilla", *remote, "--train.max_steps", "1"))
    execute(run, save_model=False)
    assert len(run.pair_log) == 4 and len(reward_server.seen) == 2 + 2  # 2 failures, then 2 calls of 2 pairs

    # step 1 labels; in step 2 the second call answers NaN on every retry: the step fails naming its pairs
    reward_server.seen.clear()
    reward_server.script = ["ok", "ok", "ok"] + ["nan"] * 10
    run = _prepare(
        launcher_argv(tiny_suite, prompts, tmp_path / "nan", "vanilla", *remote, "--oracle.max_retries", "2")
    )
    with pytest.raises(OracleError, match=r"'s000002-p00002', 's000002-p00003'\] after 3 attempts") as err:
        execute(run, save_model=False)
    assert err.value.pair_ids == ["s000002-p00002", "s000002-p00003"]
    from openrlhf_pilaf.pairs import PairLog

    kept = [r["pair_id"] for r in PairLog(tmp_path / "nan" / "pairs.jsonl")]
    assert kept == [f"s000001-p{i:05d}" for i in range(4)] + ["s000002-p00000", "s000002-p00001"]


def test_sigkill_and_resume_loses_nothing_and_pays_nothing_twice(tiny_suite, prompts, tmp_path):
    calls = tmp_path / "oracle_calls.txt"
    reward = tmp_path / "reward.py"
    reward.write_text(KILLING_REWARD.format(calls=str(calls)))
    out = tmp_path / "run"
    argv = launcher_argv(
        tiny_suite,
        prompts,
        out,
        "pilaf",
        "--reward.remote_url",
        str(reward),
        "--oracle.batch_size",
        "2",  # one pair per oracle call
        "--train.max_steps",
        "3",
        "--ckpt.save_steps",
        "1",
    )
    cmd = [sys.executable, "-m", "openrlhf_pilaf.cli.train_dpo_ray", *argv]
    # 4 pairs a step, 2 responses a call: call 7 (lines 13-14) is the third pair of step 2, after step 1's checkpoint
    killed = subprocess.run(cmd, env={**os.environ, "PILAF_TEST_KILL_AT": "13"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    from openrlhf_pilaf.pairs import PairLog

    before = [r["pair_id"] for r in PairLog(out / "pairs.jsonl")]
    assert before == [f"s000001-p{i:05d}" for i in range(4)] + ["s000002-p00000", "s000002-p00001"]
    state = json.loads((out / "ckpt" / "driver_state.json").read_text())
    assert state["step"] == 1

    fresh = subprocess.run(cmd, capture_output=True, text=True)  # without --ckpt.load_enable: refused
    assert fresh.returncode == 2 and "--ckpt.load_enable" in fresh.stderr

    resumed = subprocess.run([*cmd, "--ckpt.load_enable"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = list(PairLog(out / "pairs.jsonl"))
    ids = [r["pair_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 3 * 4, "as many pairs as an uninterrupted run, none twice"
    assert set(ids) == {f"s{s:06d}-p{i:05d}" for s in (1, 2, 3) for i in range(4)}
    # every logged pair was scored once; the one extra call is the pair in flight when the driver died
    n_calls = len(calls.read_text().splitlines())
    assert n_calls == 2 * len(rows) + 2
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]  # step 2 was replayed from the log, not relabelled
    assert metrics[-1]["labels_spent"] == 2 * len(rows)
    assert (out / "final" / "config.json").exists()
