"""`python -m openrlhf_pilaf.cli.evaluate` against answers known without it (the issue's "Proof").

- A policy evaluated against itself: every response's log-ratio is exactly 0, so kl == kl_se == 0.0 and
  J == reward, with the PyTorch engine (reward-model oracle) and once with vLLM (one engine start: slow).
- One-token responses at temperature 1: the sequence KL is the next-token KL(pi || pi_ref) at the prompt,
  computed exactly over the whole vocabulary from the Hugging Face models; the CLI's Monte Carlo mean must
  be within 4 standard errors of it, and the same band must exclude the reverse KL and 0 (the test's power).
- The reward is the mean of what the oracle returns, recomputed from the samples (a .py reward_func and
  an http server), with reward_ci95 = 1.96 * std / sqrt(n).
- Refusals: exit 2, naming the flag, before any model loads; JSON keys exactly summarize's plus "meta".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from openrlhf_pilaf.cli import evaluate as ev
from openrlhf_pilaf.trainer.online_dpo.evaluation import summarize
from tests.online_dpo_helpers import length_reward_files
from tests.reward_server import ScriptedRewardServer

SUMMARY_KEYS = set(summarize([1.0, 2.0], [0.0, 1.0], beta=0.1))
NUM_PROMPTS = 4
ONE_TOKEN_SAMPLES = 256  # per prompt: SE ~0.14 nats against a forward/reverse gap of ~1.5 for the tiny suite
SE_BAND = 4.0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return length_reward_files(tmp_path_factory.mktemp("evaluate"), num_prompts=NUM_PROMPTS)


def cli_argv(tiny_suite, files, *extra: str, model=None, ref=None, reward=None) -> list[str]:
    return [
        "--model",
        str(model or tiny_suite.policy),
        "--ref",
        str(ref or tiny_suite.reference),
        "--reward",
        str(reward or files.reward),
        "--data",
        str(files.prompts),
        "--data.input_key",
        "prompt",
        "--data.apply_chat_template",
        "--data.max_len",
        "64",
        "--max_new_tokens",
        "8",  # a later --max_new_tokens in `extra` wins
        *extra,
    ]


def run(argv: list[str]) -> ev.EvaluationResult:
    return ev.run_evaluation(ev.parse_config(argv))


def response_text_length(tokenizer, sample, prompt) -> float:
    """What LENGTH_REWARD computes, from the sample itself (the query is prompt and response decoded together)."""
    query = tokenizer.decode(sample.prompt_ids + sample.token_ids, skip_special_tokens=False)
    return float(len(query) - len(prompt.text))


def check_reward_summary(summary: dict, rewards: list[float]) -> None:
    r = np.asarray(rewards, dtype=np.float64)
    assert r.std() > 0, "a constant reward would not test the interval"
    assert summary["reward"] == pytest.approx(r.mean(), rel=1e-12, abs=1e-12)
    assert summary["reward_ci95"] == pytest.approx(1.96 * r.std(ddof=1) / math.sqrt(len(r)), rel=1e-12)
    assert summary["n"] == len(r)


def read_report(path: Path) -> dict:
    data = json.loads(path.read_text())
    assert set(data) == SUMMARY_KEYS | {"meta"}, sorted(data)
    assert not list(path.parent.glob(f".{path.name}.*")), "a temporary file was left behind"
    return data


# ---------------------------------------------------------------- known answers


def test_policy_against_itself_has_kl_exactly_zero_torch(tiny_suite, files, tmp_path, capsys):
    out = tmp_path / "eval.json"
    out.write_text("old")  # replaced whole
    argv = cli_argv(
        tiny_suite,
        files,
        "--engine",
        "torch",
        "--samples_per_prompt",
        "3",
        "--max_new_tokens",
        "8",
        "--out",
        str(out),
        ref=tiny_suite.policy,
        reward=tiny_suite.reward,
    )
    assert ev.main(argv) == 0
    data = read_report(out)
    # kl_se == 0 means every term is equal; kl == 0 then means every response's log-ratio is 0
    assert data["kl"] == 0.0 and data["kl_se"] == 0.0
    assert data["J"] == data["reward"]
    assert math.isfinite(data["reward"]) and data["reward_ci95"] > 0  # the reward model tells responses apart
    assert data["n"] == 3 * NUM_PROMPTS and data["beta"] == 0.1
    assert data["meta"]["engine"] == "torch" and data["meta"]["samples_per_prompt"] == 3
    assert data["meta"]["response_tokens_mean"] > 1
    table = capsys.readouterr().out
    assert "kl" in table and "reward" in table and "J" in table


@pytest.fixture(scope="module")
def one_token(tiny_suite, files, tmp_path_factory):
    """4 prompts x 256 one-token responses of the tiny policy, against the (differently seeded) reference."""
    argv = cli_argv(
        tiny_suite,
        files,
        "--engine",
        "torch",
        "--max_new_tokens",
        "1",
        "--samples_per_prompt",
        str(ONE_TOKEN_SAMPLES),
        "--out",
        str(tmp_path_factory.mktemp("one_token") / "eval.json"),
    )
    return run(argv)


def exact_next_token_kls(tiny_suite, prompt_ids: list[list[int]]) -> tuple[list[float], list[float]]:
    """(KL(pi || pi_ref), KL(pi_ref || pi)) of the next token at each prompt, summed over the whole vocabulary."""
    from transformers import AutoModelForCausalLM

    def next_token_logprobs(path, ids):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            return [torch.log_softmax(model(torch.tensor([x])).logits[0, -1].double(), -1) for x in ids]

    lp = next_token_logprobs(tiny_suite.policy, prompt_ids)
    lq = next_token_logprobs(tiny_suite.reference, prompt_ids)
    forward = [float((p.exp() * (p - q)).sum()) for p, q in zip(lp, lq, strict=True)]
    reverse = [float((q.exp() * (q - p)).sum()) for p, q in zip(lp, lq, strict=True)]
    return forward, reverse


def test_one_token_kl_matches_the_exact_kl_and_rejects_wrong_answers(tiny_suite, files, one_token):
    from transformers import AutoTokenizer

    summary = one_token.summary
    assert summary["n"] == NUM_PROMPTS * ONE_TOKEN_SAMPLES
    assert all(len(s.token_ids) == 1 for s in one_token.samples)
    # the prompts the CLI sampled from are the chat-formatted dataset prompts, tokenised without extra specials
    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    texts = [json.loads(line)["prompt"] for line in files.prompts.read_text().splitlines()]
    want_ids = [
        tok(
            tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        ).input_ids
        for t in texts
    ]
    assert [list(p.ids) for p in one_token.prompts] == want_ids
    assert [s.prompt_ids for s in one_token.samples[::ONE_TOKEN_SAMPLES]] == want_ids

    forward, reverse = exact_next_token_kls(tiny_suite, want_ids)
    exact, wrong_reverse = float(np.mean(forward)), float(np.mean(reverse))
    kl, se = summary["kl"], summary["kl_se"]
    print(f"one-token KL: CLI {kl:.4f} ± {se:.4f}, exact {exact:.4f}, reverse {wrong_reverse:.4f}")
    assert se > 0
    assert exact > 20 * se, "the exact KL must be far from 0 for the test to mean anything"
    assert abs(kl - exact) < SE_BAND * se
    # power: the same band rejects answers a broken estimator could give
    assert abs(kl - wrong_reverse) > SE_BAND * se
    assert abs(kl - 0.0) > SE_BAND * se
    # and the summary is the mean of the per-response log-ratios
    terms = [math.fsum(s.policy_logprobs) - math.fsum(s.reference_logprobs) for s in one_token.samples]
    assert kl == pytest.approx(np.mean(terms), rel=1e-12)
    assert summary["J"] == pytest.approx(summary["reward"] - 0.1 * kl, rel=1e-12)


def test_reward_is_the_mean_of_reward_func_over_the_samples(tiny_suite, files, tmp_path):
    from transformers import AutoTokenizer

    argv = cli_argv(
        tiny_suite,
        files,
        "--engine",
        "torch",
        "--samples_per_prompt",
        "3",
        "--max_new_tokens",
        "6",
        "--beta",
        "0.5",
        "--out",
        str(tmp_path / "e.json"),
    )
    result = run(argv)
    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    recomputed = [response_text_length(tok, s, result.prompts[s.prompt]) for s in result.samples]
    assert result.rewards == recomputed
    check_reward_summary(result.summary, recomputed)
    assert [s.prompt for s in result.samples] == [i for i in range(NUM_PROMPTS) for _ in range(3)]
    assert result.summary["J"] == pytest.approx(result.summary["reward"] - 0.5 * result.summary["kl"], rel=1e-12)


def test_http_reward_server_is_the_oracle_and_its_failure_exits_1(tiny_suite, files, tmp_path, capsys):
    from transformers import AutoTokenizer

    with ScriptedRewardServer(score=len).running() as server:
        extra = ("--engine", "torch", "--samples_per_prompt", "2", "--max_new_tokens", "4", "--out")
        result = run(cli_argv(tiny_suite, files, *extra, str(tmp_path / "a.json"), reward=server.url))
        tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
        queries = [tok.decode(s.prompt_ids + s.token_ids, skip_special_tokens=False) for s in result.samples]
        assert server.seen[-1]["query"] == queries
        check_reward_summary(result.summary, [float(len(q)) for q in queries])

        server.script = ["500"]  # no retries in an evaluation: the run fails, and writes nothing
        out = tmp_path / "b.json"
        assert ev.main(cli_argv(tiny_suite, files, *extra, str(out), reward=server.url)) == 1
        assert "error: the oracle failed" in capsys.readouterr().err
        assert not out.exists()


# ---------------------------------------------------------------- refusals


def _refused(argv: list[str], capsys) -> str:
    try:
        code = ev.main(argv)
    except SystemExit as e:  # argparse's own refusals (choices, types, required flags)
        code = e.code
    assert code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (("--model", "/nonexistent/policy"), "--model"),
        (("--ref", "/nonexistent/ref"), "--ref"),
        (("--reward", "/nonexistent/reward.py"), "--reward"),
        (("--data", "/nonexistent/prompts.jsonl"), "--data"),
        (("--samples_per_prompt", "0"), "--samples_per_prompt"),
        (("--beta", "0"), "--beta"),
        (("--beta", "-0.1"), "--beta"),
        (("--beta", "nan"), "--beta"),
        (("--temperature", "0"), "--temperature"),
        (("--max_new_tokens", "64"), "--max_new_tokens"),  # no room for the prompt in --data.max_len 64
        (("--engine", "torch", "--vllm.gpu_memory_utilization", "0.3"), "--vllm.gpu_memory_utilization"),
    ],
)
def test_refusals_exit_2_naming_the_flag(tiny_suite, files, tmp_path, capsys, extra, flag):
    out = tmp_path / "eval.json"
    argv = cli_argv(tiny_suite, files, "--out", str(out))
    # a later flag wins in argparse: the bad value replaces the good one
    err = _refused([*argv, *extra], capsys)
    assert err.startswith("error: "), err
    assert flag in err, err
    assert not out.exists()


def test_missing_required_flag_is_argparse_usage_error(tiny_suite, files, capsys):
    argv = cli_argv(tiny_suite, files)
    i = argv.index("--reward")
    err = _refused(argv[:i] + argv[i + 2 :], capsys)
    assert "--reward" in err


def test_refused_tokenizer_of_another_reference(tiny_suite, files, cache_root, capsys):
    from openrlhf_pilaf.testing.tiny_models import build_foreign_tokenizer_reference

    foreign = build_foreign_tokenizer_reference(cache_root / "models")
    capsys.readouterr()  # building the model (first run, empty cache) prints save progress
    err = _refused(cli_argv(tiny_suite, files, "--engine", "torch", ref=foreign), capsys)
    assert err.startswith("error: --ref"), err


# ---------------------------------------------------------------- vLLM (one engine start)


@pytest.mark.vllm
def test_policy_against_itself_has_kl_exactly_zero_vllm(tiny_suite, files, tmp_path):
    out = tmp_path / "eval.json"
    argv = cli_argv(
        tiny_suite,
        files,
        "--engine",
        "vllm",
        "--samples_per_prompt",
        "3",
        "--max_new_tokens",
        "8",
        "--out",
        str(out),
        ref=tiny_suite.policy,
    )
    assert ev.main(argv) == 0
    data = read_report(out)
    assert data["kl"] == 0.0 and data["kl_se"] == 0.0
    assert data["J"] == data["reward"]
    assert data["reward_ci95"] > 0 and data["n"] == 3 * NUM_PROMPTS
    assert data["meta"]["engine"] == "vllm"
