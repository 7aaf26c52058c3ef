"""A sampler registered from outside the package, as a plug-in would: it is one class and one
`register_sampler` call, and nothing else is edited. Its option becomes a launcher flag (in `--help`),
is validated naming that flag, is refused with another sampler, and the sampler runs online DPO end to
end with `--engine torch`. Also: an option two samplers share is one flag, and one they spell
differently is refused at registration. Each test unregisters what it registered, so the rest of the
suite sees the four built-ins."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from scipy.stats import binomtest

from openrlhf_pilaf.pairs.types import Branch
from openrlhf_pilaf.samplers import (
    SAMPLERS,
    PairSampler,
    SamplerConfig,
    SamplerOptions,
    register_sampler,
    unregister_sampler,
)
from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, dataclass_from_namespace
from tests.online_dpo_helpers import launcher_argv, write_prompts

BUILTINS = ["vanilla", "best_of_n", "hybrid", "pilaf"]


class ReferenceMixSampler(PairSampler):
    """With probability ref_prob a policy-vs-reference pair (hybrid's), otherwise a vanilla pair: how
    much of the label budget goes to the reference anchor is one knob."""

    name = "reference_mix"
    summary = "policy vs reference with probability ref_prob, else 2 policy draws"

    @dataclass(frozen=True)
    class Options(SamplerOptions):
        ref_prob: float = field(default=0.5, metadata={"help": "probability of a policy-vs-reference pair"})

        def __post_init__(self) -> None:
            super().__post_init__()
            if not 0 <= self.ref_prob <= 1:
                raise ValueError(f"{self.flag('ref_prob')} is a probability in [0, 1], got {self.ref_prob}")

    def __init__(self, ref_prob: float) -> None:
        self.ref_prob = ref_prob

    @classmethod
    def from_options(cls, options: Options, beta: float) -> ReferenceMixSampler:
        return cls(options.ref_prob)

    def draws(self, rng: np.random.Generator) -> list[tuple[float, Branch]]:
        if rng.random() < self.ref_prob:
            return [(0.0, "policy"), (-1.0, "reference")]
        return [(0.0, "policy"), (0.0, "policy")]


@pytest.fixture
def reference_mix() -> Iterator[type[PairSampler]]:
    registered = register_sampler(ReferenceMixSampler)
    yield registered
    assert unregister_sampler("reference_mix") is ReferenceMixSampler
    assert list(SAMPLERS) == BUILTINS


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    return write_prompts(tmp_path_factory.mktemp("prompts") / "prompts.jsonl")


def _parser():
    from openrlhf_pilaf.cli.train_dpo_ray import make_parser

    return make_parser()


def _parse(argv):
    from openrlhf_pilaf.cli.train_dpo_ray import parse_config

    return parse_config(argv)


def test_its_option_is_a_launcher_flag_only_while_registered(reference_mix, tiny_suite, prompts, tmp_path):
    text = _parser().format_help()
    assert "--pilaf.ref_prob REF_PROB" in text
    assert "reference_mix: probability of a policy-vs-reference pair (default: 0.5)" in " ".join(text.split())
    assert "reference_mix (policy vs reference with probability ref_prob" in " ".join(text.split())
    # today's flags are unchanged beside it
    for flag in ("--pilaf.sampler", "--pilaf.w", "--pilaf.mix_prob", "--pilaf.n", "--dpo.first_round_sampler"):
        assert flag in text

    cfg = _parse(launcher_argv(tiny_suite, prompts, tmp_path, "reference_mix", "--pilaf.ref_prob", "0.25"))
    assert cfg.pilaf == SamplerConfig(sampler="reference_mix", ref_prob=0.25)
    sampler = cfg.samplers()[0]
    assert isinstance(sampler, ReferenceMixSampler) and sampler.ref_prob == 0.25
    assert _parse(launcher_argv(tiny_suite, prompts, tmp_path, "reference_mix")).samplers()[0].ref_prob == 0.5


def test_without_the_plugin_its_flag_is_unknown(tiny_suite, prompts, tmp_path, capsys):
    assert "--pilaf.ref_prob" not in _parser().format_help()
    with pytest.raises(SystemExit) as e:
        _parse(launcher_argv(tiny_suite, prompts, tmp_path, "pilaf", "--pilaf.ref_prob", "0.5"))
    assert e.value.code == 2 and "unrecognized arguments: --pilaf.ref_prob" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sampler,extra,match",
    [
        ("reference_mix", ("--pilaf.ref_prob", "1.5"), r"--pilaf\.ref_prob is a probability in \[0, 1\], got 1\.5"),
        ("reference_mix", ("--pilaf.ref_prob", "nan"), r"--pilaf\.ref_prob is a probability"),
        ("pilaf", ("--pilaf.ref_prob", "0.5"), r"--pilaf\.ref_prob is not a setting of --pilaf\.sampler pilaf"),
        ("reference_mix", ("--pilaf.w", "0.1"), r"--pilaf\.w is not a setting of --pilaf\.sampler reference_mix"),
        ("reference_mix", ("--pilaf.n", "4"), r"--pilaf\.n is not a setting of --pilaf\.sampler reference_mix"),
    ],
)
def test_bad_values_and_foreign_settings_are_refused_naming_the_flag(
    reference_mix, tiny_suite, prompts, tmp_path, sampler, extra, match
):
    with pytest.raises(ValueError, match=match):
        _parse(launcher_argv(tiny_suite, prompts, tmp_path, sampler, *extra))


def test_the_launcher_reports_a_bad_value_as_a_usage_error(reference_mix, tiny_suite, prompts, tmp_path, capsys):
    from openrlhf_pilaf.cli.train_dpo_ray import main

    assert main(launcher_argv(tiny_suite, prompts, tmp_path, "reference_mix", "--pilaf.ref_prob", "-0.1")) == 2
    assert "error: --pilaf.ref_prob is a probability in [0, 1], got -0.1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # not a number: argparse's own message, as for every float flag
        main(launcher_argv(tiny_suite, prompts, tmp_path, "reference_mix", "--pilaf.ref_prob", "half"))
    assert e.value.code == 2 and "--pilaf.ref_prob: invalid float value: 'half'" in capsys.readouterr().err


def test_python_configs_are_checked_like_flags(reference_mix):
    with pytest.raises(ValueError, match=r"--pilaf\.ref_prob is a probability"):
        SamplerConfig(sampler="reference_mix", ref_prob=2.0)
    with pytest.raises(ValueError, match=r"--pilaf\.mix_prob is not a setting of --pilaf\.sampler reference_mix"):
        SamplerConfig(sampler="reference_mix", mix_prob=0.5)
    assert SamplerConfig(sampler="reference_mix", options={"ref_prob": 0.1}).build(0.1).ref_prob == 0.1


def test_its_plan_draws_the_reference_with_probability_ref_prob(reference_mix):
    n, ref_prob = 4000, 0.3
    sampler = SamplerConfig(sampler="reference_mix", ref_prob=ref_prob).build(0.1)
    plan = sampler.plan([[1]] * n, np.random.default_rng([3, 1]))
    with_ref = sum(g.branches == ("policy", "reference") for g in plan.groups)
    assert with_ref + sum(g.branches == ("policy", "policy") for g in plan.groups) == n
    assert binomtest(with_ref, n, ref_prob).pvalue > 0.01
    assert binomtest(with_ref, n, ref_prob + 0.05).pvalue < 1e-4  # power: a 5-point error would be seen
    for g in plan.groups:
        ws = [plan.generation.samples[i].w for i in g.sample_indices]
        assert ws == ([0.0, -1.0] if g.branches[1] == "reference" else [0.0, 0.0])


def test_an_option_two_samplers_declare_is_one_flag():
    class SharedMix(PairSampler):
        """PILAF's coin in front of hybrid: reads --pilaf.mix_prob, spelled as PILAF spells it."""

        name = "shared_mix"

        @dataclass(frozen=True)
        class Options(SamplerOptions):
            mix_prob: float = field(default=0.25, metadata={"help": "probability of a vanilla pair"})

        def __init__(self, mix_prob: float) -> None:
            self.mix_prob = mix_prob

        @classmethod
        def from_options(cls, options: Options, beta: float) -> SharedMix:
            return cls(options.mix_prob)

        def draws(self, rng):
            return [(0.0, "policy"), (0.0, "policy") if rng.random() < self.mix_prob else (-1.0, "reference")]

    register_sampler(SharedMix)
    try:
        text = " ".join(_parser().format_help().split())
        assert text.count("[--pilaf.mix_prob MIX_PROB]") == 1  # the usage line lists each flag once
        assert "pilaf: probability that a prompt gets a vanilla pair instead (default: 0.5); shared_mix: " in text
        parser = argparse.ArgumentParser()
        add_dataclass_arguments(parser, SamplerConfig)
        for name in ("pilaf", "shared_mix"):
            ns = parser.parse_args(["--pilaf.sampler", name, "--pilaf.mix_prob", "0.1"])
            assert dataclass_from_namespace(SamplerConfig, ns).build(0.1).mix_prob == 0.1
        assert (
            dataclass_from_namespace(SamplerConfig, parser.parse_args(["--pilaf.sampler", "shared_mix"]))
            .build(0.1)
            .mix_prob
            == 0.25
        )  # each sampler keeps its own default
    finally:
        unregister_sampler("shared_mix")
    assert list(SAMPLERS) == BUILTINS


def test_an_option_spelled_differently_by_two_samplers_is_refused_at_registration():
    class IntMix(PairSampler):
        name = "int_mix"

        @dataclass(frozen=True)
        class Options(SamplerOptions):
            mix_prob: int = field(default=1, metadata={"help": "an int where PILAF has a float"})

        def draws(self, rng):
            return [(0.0, "policy"), (0.0, "policy")]

    class Undecorated(PairSampler):
        name = "undecorated"

        class Options(SamplerOptions):
            x: float = 0.5

        def draws(self, rng):
            return []

    class Reserved(PairSampler):
        name = "reserved"

        @dataclass(frozen=True)
        class Options(SamplerOptions):
            sampler: str = field(default="x", metadata={"help": "would shadow --pilaf.sampler"})

        def draws(self, rng):
            return []

    with pytest.raises(TypeError, match=r"--pilaf\.mix_prob is declared as .* by pilaf but as .* by int_mix"):
        register_sampler(IntMix)
    with pytest.raises(TypeError, match=r"Options must be a SamplerOptions subclass decorated with @dataclass"):
        register_sampler(Undecorated)
    with pytest.raises(TypeError, match=r"--pilaf\.sampler is taken"):
        register_sampler(Reserved)
    assert list(SAMPLERS) == BUILTINS


@pytest.mark.openrlhf
def test_two_online_steps_with_the_plugin_sampler(reference_mix, tiny_suite, prompts, tmp_path):
    from openrlhf_pilaf.trainer.online_dpo.run import execute, prepare_run

    argv = launcher_argv(tiny_suite, prompts, tmp_path / "run", "reference_mix", "--pilaf.ref_prob", "0.75")
    run = prepare_run(_parse(argv))
    history = execute(run, save_model=False)
    assert [h["step"] for h in history] == [1, 2]

    rows = list(run.pair_log)
    assert [r["pair_id"] for r in rows] == [f"s{s:06d}-p{i:05d}" for s in (1, 2) for i in range(4)]
    assert {r["sampler"] for r in rows} == {"reference_mix"}
    w_of = {"policy": 0.0, "reference": -1.0}
    kinds = set()
    for r in rows:
        branches = (r["branch_a"], r["branch_b"])
        assert branches in {("policy", "policy"), ("policy", "reference"), ("reference", "policy")}
        assert (r["w_a"], r["w_b"]) == (w_of[r["branch_a"]], w_of[r["branch_b"]])
        with_ref = "reference" in branches
        # cost counters: a reference draw is one reference forward per token, a policy draw one policy forward
        assert (r["policy_forwards"], r["reference_forwards"]) == ((1, 1) if with_ref else (2, 0))
        kinds.add(with_ref)
    assert True in kinds  # ref_prob 0.75 over 8 seeded pairs: the reference branch is drawn
