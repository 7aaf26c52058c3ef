"""bench/bench_vs_trl.py without TRL (a benchmark dependency only, never installed here): its flags, and that the
spec TRL's runner gets carries exactly our launch's settings. Nothing is trained, loaded or started."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.bench_vs_trl import GOLD_RULE, RUNNER, check_args, make_parser, ours_argv, trl_spec

STAND_IN = Path("/nonexistent")


def stand_in_setup():
    """What ours_argv reads of a DemoSetup (no file is opened)."""
    return SimpleNamespace(
        policy=STAND_IN,
        train_prompts=STAND_IN,
        eval_prompts=STAND_IN,
        num_train_prompts=192,
        reward_file_for=lambda task: STAND_IN / f"gold_reward_{task}.py",
    )


def runner_required() -> tuple[str, ...]:
    """The runner's REQUIRED keys; its module imports nothing but the standard library at the top."""
    spec = importlib.util.spec_from_file_location("trl_online_dpo_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.REQUIRED


def parsed(argv: list[str]):
    return make_parser().parse_args(argv)


def test_flags_are_checked():
    assert check_args(parsed(["--trl-python", "/bin/sh"])) == []
    errors = check_args(parsed(["--repeats", "0", "--lr", "nan", "--beta", "-1"]))
    assert any("--repeats" in e for e in errors)
    assert any("--lr" in e for e in errors)
    assert any("--beta" in e for e in errors)
    assert any("--trl-python is required" in e for e in errors)
    assert any("not an executable" in e for e in check_args(parsed(["--trl-python", str(STAND_IN)])))
    # the internal child run needs no TRL
    assert check_args(parsed(["--ours-child", "spec.json"])) == []


def test_trl_spec_is_our_launch():
    from openrlhf_pilaf.trainer.online_dpo.config import parse_online_dpo_argv

    args = parsed(["--trl-python", "/bin/sh", "--steps", "5", "--batch", "8", "--new-tokens", "12", "--lr", "1e-4"])
    args.beta, args.temperature = 0.2, 0.7
    cfg = parse_online_dpo_argv(ours_argv(stand_in_setup(), args, seed=7, out_dir=Path("/tmp/ours")))
    assert (cfg.engine, cfg.pilaf.sampler, cfg.oracle.labels, cfg.eval.steps) == ("torch", "vanilla", "argmax", -1)
    spec = trl_spec(
        cfg, task="fine", threads=1, bf16=True, policy=STAND_IN, prompts=STAND_IN / "p.jsonl", out_dir=Path("/o")
    )
    assert set(spec) == set(runner_required())
    assert spec["gold_rule"] == str(GOLD_RULE) and GOLD_RULE.is_file()
    expected = {
        "beta": 0.2,
        "learning_rate": 1e-4,
        "batch": 8,
        "steps": 5,
        "max_new_tokens": 12,
        "temperature": 0.7,
        "seed": 7,
        "adam_betas": list(cfg.adam.betas),
        "adam_eps": cfg.adam.eps,
        "weight_decay": cfg.adam.weight_decay,
        "max_grad_norm": cfg.actor.max_norm,
    }
    assert {k: spec[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--actor.lr_scheduler", "cosine", "constant"),
        ("--oracle.labels", "bt", "argmax"),
        ("--rollout.top_p", "0.9", "top-p"),
        ("--dpo.label_smoothing", "0.1", "label smoothing"),
    ],
)
def test_trl_spec_refuses_what_trl_would_not_match(flag, value, says):
    from openrlhf_pilaf.trainer.online_dpo.config import parse_online_dpo_argv
    from openrlhf_pilaf.utils.argv import with_flag_value

    args = parsed(["--trl-python", "/bin/sh"])
    argv = with_flag_value(ours_argv(stand_in_setup(), args, seed=0, out_dir=Path("/tmp/ours")), flag, value)
    cfg = parse_online_dpo_argv(argv)
    with pytest.raises(ValueError, match=says):
        trl_spec(cfg, task="fine", threads=1, bf16=True, policy=STAND_IN, prompts=STAND_IN, out_dir=Path("/o"))
