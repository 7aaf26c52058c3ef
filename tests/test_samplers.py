"""The four pair samplers: their plans (w per response, branches), best-of-N's selection, the a/b order,
PILAF's mixing probability (binomial tests with a power check), cost counters, and config refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from openrlhf_pilaf.engines.interface import GeneratedSample
from openrlhf_pilaf.samplers import SAMPLERS, PairSampler, SamplerConfig, register_sampler

BETA = 0.1
PROMPTS = [[1, 2, 3], [4, 5], [6]]


def _fake_samples(plan, rng: np.random.Generator) -> list[GeneratedSample]:
    """Samples as an engine returns them: random tokens and finite log-probs, one per plan entry."""
    out = []
    for spec in plan.generation.samples:
        n = int(rng.integers(1, 5))
        out.append(
            GeneratedSample(
                prompt=spec.prompt,
                w=spec.w,
                prompt_ids=list(plan.generation.prompts[spec.prompt]),
                token_ids=[int(t) for t in rng.integers(0, 50, n)],
                finish_reason="stop",
                policy_logprobs=[float(v) for v in -rng.random(n) * 3],
                reference_logprobs=[float(v) for v in -rng.random(n) * 3],
            )
        )
    return out


def _pairs(cfg: SamplerConfig, prompts=PROMPTS, seed: int = 0):
    sampler = cfg.build(BETA)
    plan = sampler.plan(prompts, np.random.default_rng([seed, 1]))
    samples = _fake_samples(plan, np.random.default_rng(seed + 100))
    ids = [f"s1-p{i}" for i in range(len(prompts))]
    return sampler, plan, samples, sampler.pairs(plan, samples, step=1, pair_ids=ids)


@pytest.mark.parametrize(
    "name,ws,branches",
    [
        ("vanilla", (0.0, 0.0), ("policy", "policy")),
        ("hybrid", (0.0, -1.0), ("policy", "reference")),
        ("best_of_n", (0.0,) * 8, ("policy",) * 8),
    ],
)
def test_fixed_plans(name, ws, branches):
    _, plan, _, pairs = _pairs(SamplerConfig(sampler=name))
    assert len(plan.groups) == len(PROMPTS) and len(pairs) == len(PROMPTS)
    for g in plan.groups:
        assert tuple(plan.generation.samples[i].w for i in g.sample_indices) == ws
        assert all(plan.generation.samples[i].prompt == g.prompt_index for i in g.sample_indices)
        assert g.branches == branches
    for p in pairs:
        assert sorted([p.a.branch, p.b.branch]) == sorted(branches[:2]) or name == "best_of_n"
        assert p.prompt_ids == tuple(PROMPTS[p.prompt_index])


def test_hybrid_pair_keeps_each_response_with_its_own_logprobs():
    _, plan, samples, pairs = _pairs(SamplerConfig(sampler="hybrid"))
    for g, p in zip(plan.groups, pairs, strict=True):
        ref = samples[g.sample_indices[1]]
        ref_resp = p.a if p.a.branch == "reference" else p.b
        assert ref_resp.w == -1.0
        assert list(ref_resp.token_ids) == ref.token_ids
        assert list(ref_resp.reference_logprobs) == ref.reference_logprobs


def test_best_of_n_keeps_argmax_and_argmin_of_the_implicit_reward():
    _, plan, samples, pairs = _pairs(SamplerConfig(sampler="best_of_n", n=5), prompts=[[1]] * 40, seed=3)
    for g, p in zip(plan.groups, pairs, strict=True):
        rewards = [
            BETA * (sum(samples[i].policy_logprobs) - sum(samples[i].reference_logprobs)) for i in g.sample_indices
        ]
        got = sorted([p.a.implicit_reward(BETA), p.b.implicit_reward(BETA)])
        assert got[1] == pytest.approx(max(rewards), abs=1e-12)
        assert got[0] == pytest.approx(min(rewards), abs=1e-12)
        assert p.policy_forwards == 5 and p.reference_forwards == 0


def test_best_of_n_with_equal_rewards_still_pairs_two_distinct_responses():
    sampler = SamplerConfig(sampler="best_of_n", n=3).build(BETA)
    plan = sampler.plan([[1]], np.random.default_rng(0))
    same = [GeneratedSample(0, 0.0, [1], [7], "stop", [-1.0], [-1.0]) for _ in range(3)]
    (pair,) = sampler.pairs(plan, same, step=0, pair_ids=["x"])
    assert pair.a is not pair.b


def test_pilaf_mix_prob_binomial_with_power_check():
    n_prompts, mix = 4000, 0.3
    sampler = SamplerConfig(sampler="pilaf", mix_prob=mix).build(BETA)
    plan = sampler.plan([[1]] * n_prompts, np.random.default_rng([7, 0]))
    interp = sum(g.branches == ("pi_plus", "pi_minus") for g in plan.groups)
    vanilla = sum(g.branches == ("policy", "policy") for g in plan.groups)
    assert interp + vanilla == n_prompts
    # (+w, -w) pairs have probability 1 - mix_prob: not rejected at 1%; a 5-point error would be (power check).
    assert binomtest(interp, n_prompts, 1 - mix).pvalue > 0.01
    assert binomtest(interp, n_prompts, 1 - mix - 0.05).pvalue < 1e-4
    for g in plan.groups:
        ws = [plan.generation.samples[i].w for i in g.sample_indices]
        assert ws == ([BETA, -BETA] if g.branches[0] == "pi_plus" else [0.0, 0.0])


def test_pilaf_w_defaults_to_beta_and_can_be_set():
    assert SamplerConfig(sampler="pilaf").build(0.25).w == 0.25
    assert SamplerConfig(sampler="pilaf", w=0.05).build(0.25).w == 0.05
    assert SamplerConfig(sampler="pilaf").build(0.25).mix_prob == 0.5


def test_ab_order_carries_no_information():
    n = 3000
    _, _, _, pairs = _pairs(SamplerConfig(sampler="hybrid"), prompts=[[1]] * n, seed=11)
    ref_first = sum(p.a.branch == "reference" for p in pairs)
    assert binomtest(ref_first, n, 0.5).pvalue > 0.01
    assert binomtest(ref_first, n, 0.56).pvalue < 1e-4  # power: a 6-point bias would be seen


def test_plans_are_reproducible_from_the_step_seed():
    s = SamplerConfig(sampler="pilaf").build(BETA)
    a = s.plan([[1]] * 50, np.random.default_rng([1, 2]))
    b = s.plan([[1]] * 50, np.random.default_rng([1, 2]))
    c = s.plan([[1]] * 50, np.random.default_rng([1, 3]))
    assert a == b and a != c


def test_cost_counters_match_the_method_table():
    n = 2000
    per_pair = {}
    for name in SAMPLERS:
        cfg = SamplerConfig(sampler=name)
        _, _, _, pairs = _pairs(cfg, prompts=[[1]] * n, seed=5)
        per_pair[name] = np.mean([p.policy_forwards + p.reference_forwards for p in pairs])
    assert per_pair["vanilla"] == 2 and per_pair["best_of_n"] == 8 and per_pair["hybrid"] == 2
    # PILAF: 2 forwards with probability 1/2, 4 otherwise: mean 3, sd of the mean 1/sqrt(n) ~ 0.022.
    assert abs(per_pair["pilaf"] - 3) < 4 / np.sqrt(n)


def test_pairs_refuse_a_plan_they_did_not_make():
    sampler, plan, samples, _ = _pairs(SamplerConfig(sampler="vanilla"))
    with pytest.raises(ValueError, match="asked for"):
        sampler.pairs(plan, samples[:-1], step=1, pair_ids=["a", "b", "c"])
    with pytest.raises(ValueError, match="pair ids"):
        sampler.pairs(plan, samples, step=1, pair_ids=["a"])
    missing = [GeneratedSample(s.prompt, s.w, s.prompt_ids, s.token_ids, "stop", s.policy_logprobs) for s in samples]
    with pytest.raises(ValueError, match="reference log-probs"):
        sampler.pairs(plan, missing, step=1, pair_ids=["a", "b", "c"])


def test_registry_refuses_a_taken_name():
    class Again(PairSampler):
        name = "pilaf"

        def draws(self, rng):
            return []

    with pytest.raises(ValueError, match="'pilaf' is taken"):
        register_sampler(Again)
    assert SAMPLERS["pilaf"].__name__ == "PilafSampler"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sampler": "nope"}, r"--pilaf\.sampler 'nope' is not a sampler"),
        ({"sampler": "pilaf", "n": 4}, r"--pilaf\.n is not a setting of --pilaf\.sampler pilaf"),
        ({"sampler": "vanilla", "w": 0.1}, r"--pilaf\.w is not a setting"),
        ({"sampler": "hybrid", "mix_prob": 0.5}, r"--pilaf\.mix_prob is not a setting"),
        ({"sampler": "best_of_n", "n": 1}, r"--pilaf\.n must be an integer >= 2"),
        ({"sampler": "pilaf", "w": 0.0}, r"--pilaf\.w must be a finite number > 0"),
        ({"sampler": "pilaf", "w": float("nan")}, r"--pilaf\.w must be"),
        ({"sampler": "pilaf", "mix_prob": 1.5}, r"--pilaf\.mix_prob is a probability"),
        ({"sampler": "pilaf", "mix_prob": -0.1}, r"--pilaf\.mix_prob is a probability"),
    ],
)
def test_config_refusals_name_the_flag(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplerConfig(**kwargs)


def test_build_refuses_a_bad_beta():
    for beta in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="beta"):
            SamplerConfig().build(beta)


def test_each_sampler_declares_the_settings_it_reads():
    assert {name: cls.option_names() for name, cls in SAMPLERS.items()} == {
        "vanilla": frozenset(),
        "best_of_n": frozenset({"n"}),
        "hybrid": frozenset(),
        "pilaf": frozenset({"w", "mix_prob"}),
    }
    assert SamplerConfig(sampler="best_of_n").settings().n == 8  # the default lives with the sampler
    assert SamplerConfig(sampler="pilaf").settings().w is None  # resolved to the DPO beta by build()
    # a plug-in option may not take the names of SamplerConfig's own fields
    from dataclasses import fields

    from openrlhf_pilaf.samplers.base import RESERVED_OPTION_NAMES

    assert {f.name for f in fields(SamplerConfig)} == RESERVED_OPTION_NAMES


def test_sampler_configs_round_trip_through_their_flags():
    import argparse

    from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, dataclass_from_namespace, to_argv

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, SamplerConfig)
    for cfg in (SamplerConfig(), SamplerConfig(sampler="best_of_n", n=3), SamplerConfig(w=0.2, mix_prob=0.0)):
        assert dataclass_from_namespace(SamplerConfig, parser.parse_args(to_argv(cfg))) == cfg
