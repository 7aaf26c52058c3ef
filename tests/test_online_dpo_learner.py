"""The DPO learner under OpenRLHF's DeepspeedStrategy: ZeRO 0 and 3 in one process, and two data-parallel
ranks under ZeRO-3 as Ray actors (the `--engine vllm` learner group), pairs kept whole across ranks."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.openrlhf]


def _pairs(tokenizer, n: int):
    from openrlhf_pilaf.pairs.log import TrainingPair

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me what the cat sees."}], tokenize=False, add_generation_prompt=True
    )
    p = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    good = tuple(tokenizer("The cat sees an apple.</s>", add_special_tokens=False)["input_ids"])
    bad = tuple(tokenizer("12 95 7 3</s>", add_special_tokens=False)["input_ids"])
    return [TrainingPair(f"p{i}", p, good, bad, -20.0, -20.0) for i in range(n)]


def _cfg(tiny_suite, tmp_path, zero_stage: int, ranks: int = 1, engine: str = "torch"):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from tests.online_dpo_helpers import launcher_argv, write_prompts

    prompts = write_prompts(tmp_path / "p.jsonl")
    extra = ["--ds.zero_stage", str(zero_stage), "--train.batch_size", "4", "--rollout.batch_size", "4"]
    if ranks > 1:
        extra += ["--actor.num_gpus_per_node", str(ranks)]
    return parse_config(launcher_argv(tiny_suite, prompts, tmp_path / "run", "vanilla", *extra, engine=engine))


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_learner_trains_and_exports_full_weights(tiny_suite, tmp_path, zero_stage):
    from transformers import AutoModelForCausalLM

    from tests.online_dpo_helpers import local_dpo_learner

    cfg = _cfg(tiny_suite, tmp_path, zero_stage)
    learner, _, tok = local_dpo_learner(cfg, tiny_suite, reference_path=str(tiny_suite.reference), optimizer_steps=2)
    start = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.bfloat16).state_dict()
    sums = learner.train(_pairs(tok, 4))
    assert sums["pairs"] == 4 and torch.isfinite(torch.tensor(sums["loss"]))
    weights = dict(learner.named_weights())
    assert set(weights) == {n for n, _ in learner.hf_model.named_parameters()}
    for name, w in weights.items():
        assert tuple(w.shape) == tuple(start[name].shape), f"{name} is a ZeRO-3 shard, not the full tensor"
    # one optimizer step at lr 1e-3: every weight matrix moves (a norm's 1.0 can stay within bf16 rounding)
    matrices = [n for n, w in weights.items() if w.dim() == 2]
    assert matrices and all(not torch.equal(weights[n].cpu(), start[n]) for n in matrices)


@pytest.mark.ray
def test_two_ranks_zero3_as_ray_actors(ray_cluster, tiny_suite, tmp_path):
    from transformers import AutoModelForCausalLM

    from openrlhf_pilaf.trainer.online_dpo.openrlhf_args import make_strategy, openrlhf_args
    from openrlhf_pilaf.trainer.online_dpo.ray_actors import DPOLearnerActor
    from openrlhf_pilaf.trainer.online_dpo.run import load_tokenizer
    from openrlhf_pilaf.trainer.online_dpo.runtime_ray import RayLearner, _group, shard

    cfg = _cfg(tiny_suite, tmp_path, 3, ranks=2, engine="vllm")
    tok = load_tokenizer(str(tiny_suite.policy))
    group = _group(DPOLearnerActor, 1, 2, cpu_only=True)
    strategy = make_strategy(openrlhf_args(cfg, reference_path=str(tiny_suite.reference)), cfg)
    kwargs = dict(dpo=cfg.dpo, actor=cfg.actor, adam=cfg.adam, optimizer_steps=2, pad_token_id=tok.pad_token_id)
    ray_cluster.get(group.async_init_model_from_pretrained(strategy, str(tiny_suite.policy), kwargs))
    learner = RayLearner(group, tok, str(tmp_path / "ckpt"), 1)
    pairs = _pairs(tok, 4)
    assert [len(s) for s in shard(pairs, 2)] == [2, 2]
    sums = learner.train(pairs)
    assert sums["pairs"] == 4  # 2 whole pairs on each rank
    learner.save_model(str(tmp_path / "final"))
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "final", dtype=torch.bfloat16).state_dict()
    start = AutoModelForCausalLM.from_pretrained(tiny_suite.policy, dtype=torch.bfloat16).state_dict()
    matrices = [k for k in start if start[k].dim() == 2 and k in trained]
    assert matrices and all(not torch.equal(trained[k], start[k]) for k in matrices)
    for a in group._actor_handlers:
        ray_cluster.kill(a)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        shard(pairs[:3], 2)


@pytest.mark.parametrize(
    "kind",
    [
        {"ipo": False, "label_smoothing": 0.0},
        {"ipo": False, "label_smoothing": 0.2},
        {"ipo": True, "label_smoothing": 0.0},
    ],
)
def test_plain_pytorch_dpo_loss_equals_openrlhfs(kind):
    from openrlhf.models.loss import DPOLoss

    from openrlhf_pilaf.trainer.online_dpo.torch_learner import dpo_loss

    g = torch.Generator().manual_seed(0)
    logps = [-torch.rand(16, generator=g, dtype=torch.float64) * 30 for _ in range(4)]
    want = DPOLoss(0.1, label_smoothing=kind["label_smoothing"], ipo=kind["ipo"])(*logps)
    got = dpo_loss(*logps, beta=0.1, **kind)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_without_deepspeed_the_torch_engine_trains_with_plain_adamw(tiny_suite, tmp_path, monkeypatch):
    """`--engine torch` on a machine without DeepSpeed (the lent GPU machine has none): same loop, AdamW."""
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.trainer.online_dpo import runtime_torch
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run
    from openrlhf_pilaf.trainer.online_dpo.torch_learner import TorchDPOLearner
    from tests.online_dpo_helpers import launcher_argv, write_prompts

    monkeypatch.setattr(runtime_torch, "deepspeed_available", lambda: False)
    prompts = write_prompts(tmp_path / "p.jsonl")
    run = prepare_run(
        parse_config(launcher_argv(tiny_suite, prompts, tmp_path / "run", "pilaf", "--ckpt.save_steps", "1"))
    )
    learner = run.parts.learner.learner
    assert isinstance(learner, TorchDPOLearner)
    start = {n: p.detach().clone() for n, p in learner.hf_model.named_parameters()}
    history = execute(run, save_model=True)
    assert len(history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    trained = dict(learner.hf_model.named_parameters())
    assert all(not torch.equal(start[n], trained[n]) for n in start if start[n].dim() == 2)
    for n, p in run.parts.raw_engine.policy.named_parameters():
        assert torch.equal(p, trained[n].detach()), n
    # its checkpoint restores the same weights (and optimizer) into a fresh learner
    fresh = prepare_run(
        parse_config(launcher_argv(tiny_suite, prompts, tmp_path / "run", "pilaf", "--ckpt.load_enable"))
    )
    fresh.parts.learner.load_checkpoint("global_step2")
    for n, p in fresh.parts.learner.learner.hf_model.named_parameters():
        assert torch.equal(p, trained[n].detach()), n
    assert (tmp_path / "run" / "final" / "config.json").exists()
