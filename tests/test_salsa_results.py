"""bench/salsa_results.py: matched-KL reading on known answers, the plan of runs, the checkpoints a run is read
at, the page's blocks, and demo.models.prepare_demo's `sft_seed` (a second SFT of the same base)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from scipy import stats

from bench.salsa_results import (
    ARMS,
    HELDOUT,
    PROTOCOL,
    Inputs,
    Run,
    analyse,
    check_same_plan,
    checkpoints_of,
    common_kl_range,
    compare_at_kl,
    draw_figures,
    kl_grid,
    plan_runs,
    ppo_schedule,
    render_blocks,
    reward_at_kl,
    without_flag,
)
from openrlhf_pilaf.utils.argv import flag_value

nan = math.nan


def _same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w), (got, want)


# ------------------------------------------------------------------------------------------------ matched KL
def test_reward_at_kl_interpolates_linearly_and_says_nan_outside_the_run():
    curve = [(0.0, 0.0), (1.0, 1.0), (2.0, 4.0)]
    _same(reward_at_kl(curve, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.1]), [0.0, 0.5, 1.0, 2.5, 4.0, nan, nan])


def test_reward_at_kl_takes_the_first_passage_of_a_curve_whose_kl_goes_back():
    curve = [(0.0, 0.0), (2.0, 2.0), (1.0, 5.0), (3.0, 3.0)]
    # 1.5: first on the way up (0 -> 2), not on the way back; 2.5: only on the last segment (1 -> 3), 5 -> 3
    _same(reward_at_kl(curve, [1.5, 2.5]), [1.5, 3.5])
    # a flat segment gives its first end; a curve that starts above a KL does not reach it
    _same(reward_at_kl([(0.0, 1.0), (1.0, 2.0), (1.0, 7.0), (2.0, 3.0)], [1.0]), [2.0])
    _same(reward_at_kl([(2.5, 1.0), (3.0, 2.0)], [1.0, 2.5, 2.75]), [nan, 1.0, 1.5])
    _same(reward_at_kl([(0.5, 9.0)], [0.5, 0.6]), [9.0, nan])
    _same(reward_at_kl([(0.0, 0.0), (nan, 5.0), (1.0, 1.0)], [0.5]), [0.5])  # a missing evaluation is skipped


def test_common_kl_range_is_what_every_curve_reaches():
    a = [(0.0, 0.0), (2.0, 1.0)]
    b = [(0.5, 0.0), (3.0, 1.0), (1.0, 0.0)]
    assert common_kl_range([a, b]) == (0.5, 2.0)
    assert common_kl_range([a, [(2.5, 0.0), (4.0, 1.0)]]) is None
    assert common_kl_range([]) is None
    assert kl_grid([a, b], 4) == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert kl_grid([a, [(2.5, 0.0), (4.0, 1.0)]], 4) == []


def test_compare_at_kl_on_hand_made_arms_with_known_answers():
    """Arm 1 (three seeds): reward = KL + c over KL 0..2, c = 0, 1, 2; arm 2 (three seeds): reward = 2 KL + c,
    reaching KL 3. The default grid is 0..2 (what every run reaches); at KL 1 the arms' rewards are [1, 2, 3] and
    [2, 3, 4]; KL 2.5 is outside arm 1's runs: no value, no test."""
    sft = [[(0.0, c), (1.0, 1.0 + c), (2.0, 2.0 + c)] for c in (0.0, 1.0, 2.0)]
    soup = [[(0.0, c), (1.5, 3.0 + c), (3.0, 6.0 + c)] for c in (0.0, 1.0, 2.0)]
    rows = compare_at_kl({"sft-ref": sft, "soup-ref": soup}, n=3)
    assert [r["kl"] for r in rows] == pytest.approx([0.0, 1.0, 2.0])
    at1 = rows[1]
    assert at1["arms"]["sft-ref"]["per_seed"] == pytest.approx([1.0, 2.0, 3.0])
    assert at1["arms"]["soup-ref"]["per_seed"] == pytest.approx([2.0, 3.0, 4.0])
    assert at1["arms"]["sft-ref"]["mean"] == pytest.approx(2.0)
    assert at1["arms"]["sft-ref"]["hw"] == pytest.approx(stats.t.ppf(0.975, 2) / math.sqrt(3))  # sd 1, n 3
    assert at1["diff"] == pytest.approx(1.0)
    assert at1["p"] == pytest.approx(stats.ttest_ind([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], equal_var=False).pvalue)
    assert rows[0]["diff"] == pytest.approx(0.0) and rows[2]["diff"] == pytest.approx(2.0)

    outside = compare_at_kl({"sft-ref": sft, "soup-ref": soup}, grid=[2.5])[0]
    assert outside["arms"]["sft-ref"]["n"] == 0 and math.isnan(outside["arms"]["sft-ref"]["mean"])
    assert all(math.isnan(v) for v in outside["arms"]["sft-ref"]["per_seed"])
    assert outside["arms"]["soup-ref"]["per_seed"] == pytest.approx([5.0, 6.0, 7.0])
    assert math.isnan(outside["p"]) and math.isnan(outside["diff"])


def test_compare_at_kl_counts_only_the_seeds_that_reach_a_kl():
    short = [(0.0, 0.0), (1.0, 1.0)]
    long_ = [(0.0, 0.0), (2.0, 2.0)]
    row = compare_at_kl({"sft-ref": [short, long_, long_], "soup-ref": [long_, long_]}, grid=[1.5])[0]
    assert row["arms"]["sft-ref"]["n"] == 2 and math.isnan(row["arms"]["sft-ref"]["per_seed"][0])
    assert row["arms"]["sft-ref"]["mean"] == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------------- the plan
def _fake_inputs(tmp_path: Path) -> Inputs:
    from openrlhf_pilaf.demo.models import DemoSetup

    root = tmp_path / "demo"
    root.mkdir()
    (root / "train_prompts.jsonl").write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(192)))
    demo = DemoSetup.at(root, sft_stats={})
    return Inputs(demo=demo, sft_b=tmp_path / "demo_b" / "policy", soup=tmp_path / "out" / "soup")


def test_plan_every_run_its_own_dir_paired_seeds_and_salsa_flags_only_in_the_soup_arm(tmp_path):
    inputs = _fake_inputs(tmp_path)
    out = tmp_path / "out"
    runs = plan_runs(out, inputs, seeds=5)
    assert len(runs) == 2 * 2 * 5
    assert len({r.out for r in runs}) == len(runs)
    assert all(r.out.is_relative_to(out / r.experiment) for r in runs)
    for method in ("ppo", "dpo"):
        seeds = {arm: sorted(r.seed for r in runs if r.experiment == method and r.sampler == arm) for arm in ARMS}
        assert seeds["sft-ref"] == seeds["soup-ref"] == [1, 2, 3, 4, 5]
    for r in runs:
        argv = list(r.argv)
        assert flag_value(argv, "--train.seed") == str(r.seed)
        assert flag_value(argv, "--actor.model_name_or_path") == str(inputs.sft_a)  # the soup arm: replaced by it
        assert flag_value(argv, "--ckpt.output_dir") in (str(r.out), str(r.out / "final"))
        if r.sampler == "soup-ref":
            i = argv.index("--salsa.ingredients")
            assert argv[i + 1 : i + 3] == [str(inputs.sft_a), str(inputs.sft_b)]
            assert "--salsa.init_policy" in argv and flag_value(argv, "--salsa.output") == str(inputs.soup)
            assert "--ref.model_name_or_path" not in argv  # the DPO launcher refuses it with --salsa.ingredients
        else:
            assert not any(a.startswith("--salsa.") for a in argv)
            if r.experiment == "dpo":
                assert flag_value(argv, "--ref.model_name_or_path") == str(inputs.sft_a)
        if r.experiment == "ppo":
            assert flag_value(argv, "--reward.remote_url") == str(inputs.demo.reward_file)
            assert "--ckpt.save_hf" in argv and flag_value(argv, "--ckpt.save_steps") == str(PROTOCOL.ppo_save_every)
            assert flag_value(argv, "--algo.advantage.estimator") == PROTOCOL.ppo_estimator
            assert flag_value(argv, "--algo.kl.init_coef") == repr(PROTOCOL.beta)
        else:
            assert flag_value(argv, "--engine") == "torch" and flag_value(argv, "--pilaf.sampler") == "vanilla"


def test_ppo_argv_parses_as_our_launcher_and_openrlhf_read_it(tmp_path):
    """Our launcher's parser takes the --salsa.* flags; the rest is OpenRLHF's, whose step count (its formula in
    prepare_datasets) is the protocol's."""
    from openrlhf_pilaf.cli.train_ppo_ray import make_parser

    inputs = _fake_inputs(tmp_path)
    run = next(r for r in plan_runs(tmp_path / "out", inputs, 1, ["ppo"]) if r.sampler == "soup-ref")
    ns, rest = make_parser().parse_known_args(list(run.argv))
    assert getattr(ns, "salsa.init_policy") is True and not any(a.startswith("--salsa.") for a in rest)
    used = int(flag_value(rest, "--data.max_samples"))
    per_step = int(flag_value(rest, "--train.batch_size"))
    samples = int(flag_value(rest, "--rollout.n_samples_per_prompt"))
    episodes = int(flag_value(rest, "--train.num_episodes"))
    assert used * samples // per_step * episodes == PROTOCOL.ppo_steps  # OpenRLHF 0.11.2's max_steps


def test_a_run_directory_made_with_other_settings_is_refused(tmp_path):
    run = Run("ppo", "sft-ref", 1, tmp_path / "r", argv=("--a", "1"))
    check_same_plan(run)  # nothing there yet
    run.out.mkdir()
    (run.out / "argv.json").write_text(json.dumps(["--a", "1"]))
    check_same_plan(run)
    with pytest.raises(RuntimeError, match="was made with other settings"):
        check_same_plan(Run("ppo", "sft-ref", 1, run.out, argv=("--a", "2")))


def test_ppo_schedule_and_without_flag():
    assert ppo_schedule(24, 32, 192) == (4, 192)
    assert ppo_schedule(20, 32, 192) == (4, 160)
    assert ppo_schedule(4, 32, 192) == (1, 128)
    with pytest.raises(ValueError, match="divisible by 2"):
        ppo_schedule(7, 32, 192)
    assert without_flag(["--a", "1", "--ref.x", "p", "--b", "--ref.x=q"], "--ref.x") == ["--a", "1", "--b"]


# ------------------------------------------------------------------------------------ checkpoints of a run
def test_checkpoints_of_ppo_and_dpo_runs(tmp_path):
    ppo = tmp_path / "ppo"
    for step in (4, 8):
        (ppo / "ckpt" / f"global_step{step}_hf").mkdir(parents=True)
    (ppo / "launcher.log").write_text("".join(f"x Global step {i}: {{'reward': 0.1}}\n" for i in range(1, 11)))
    spec = {"method": "ppo", "start": str(tmp_path / "A")}
    got = [(s, Path(m).name, k) for s, m, k in checkpoints_of(ppo, spec)]
    assert got == [(0, "A", "hf"), (4, "global_step4_hf", "hf"), (8, "global_step8_hf", "hf"), (10, "final", "hf")]

    dpo = tmp_path / "dpo"
    for step in (10, 20):
        (dpo / "ckpt" / f"global_step{step}").mkdir(parents=True)
        (dpo / "ckpt" / f"global_step{step}" / "mp_rank_00_model_states.pt").write_bytes(b"")
    (dpo / "metrics.jsonl").write_text("".join(json.dumps({"step": i}) + "\n" for i in range(1, 21)))
    got = [(s, Path(m).name, k) for s, m, k in checkpoints_of(dpo, {"method": "dpo", "start": "S"})]
    assert got == [(0, "S", "hf"), (10, "mp_rank_00_model_states.pt", "ds"), (20, "final", "hf")]


# ------------------------------------------------------------------------------ analysis, tables, figures
def _fake_ppo_run(out: Path, arm: str, seed: int, slope: float) -> Run:
    d = out / "ppo" / f"{arm}_s{seed}"
    d.mkdir(parents=True)
    start_a = 0.0 if arm == "sft-ref" else 1.0
    points = [
        {
            "step": s,
            "reward": slope * s / 4 + 0.1 * seed,
            "reward_ci95": 0.2,
            "kl": s / 4,
            "kl_se": 0.05,
            "J": slope * s / 4 - 0.1 * s / 4,
            "kl_sft_a": start_a + s / 4,
            "kl_sft_a_se": 0.05,
        }
        for s in (0, 4, 8)
    ]
    (d / HELDOUT).write_text(json.dumps({"spec": {}, "points": points}))
    return Run("ppo", arm, seed, d, label=arm)


def test_analyse_render_and_draw_on_fake_runs(tmp_path):
    runs = [_fake_ppo_run(tmp_path, arm, s, 1.0 if arm == "sft-ref" else 2.0) for s in (1, 2, 3) for arm in ARMS]
    results = analyse(runs, grid_points=3)
    matched = results["ppo"]["matched"]["kl"]["rows"]
    assert [r["kl"] for r in matched] == pytest.approx([0.0, 1.0, 2.0])
    assert [r["diff"] for r in matched] == pytest.approx([0.0, 1.0, 2.0])
    kl_a = results["ppo"]["matched"]["kl_sft_a"]["rows"]  # sft-ref reaches KL_A 0..2, soup-ref 1..3: 1..2
    assert [r["kl"] for r in kl_a] == pytest.approx([1.0, 1.5, 2.0])
    assert [r["diff"] for r in kl_a] == pytest.approx([-1.0, -0.5, 0.0])  # 2 (KL_A - 1) - KL_A
    final = results["ppo"]["final"]
    assert final["arms"]["soup-ref"]["kl_sft_a"][0] == pytest.approx(3.0)
    assert final["tests"]["reward"]["diff"] == pytest.approx(2.0)

    payload = {"meta": {"machine": "test"}, "results": results}
    blocks = render_blocks(payload)
    assert set(blocks) == {"salsa_ppo_table", "salsa_setup"}
    assert "| soup-ref | 3 | 8 |" in blocks["salsa_ppo_table"] and "KL to SFT A" in blocks["salsa_ppo_table"]
    assert blocks["salsa_setup"] == "- machine: test"
    (figure,) = draw_figures(payload, tmp_path / "fig")
    assert figure.name == "salsa_ppo_reward_vs_kl.png" and figure.stat().st_size > 1000


# ------------------------------------------------------------------------- prepare_demo and its sft_seed
DEFAULT_KEY = "2c0c61ee51c2"  # prepare_demo(root, seed=0, sft_steps=300): the cache every existing run uses


def test_prepare_demo_default_key_is_unchanged_and_sft_seed_gets_its_own(tmp_path, monkeypatch):
    from openrlhf_pilaf.demo.models import DEMO_SPEC, prepare_demo
    from openrlhf_pilaf.testing import tiny_models

    records = {}

    def fake_build_once(root, build, record):  # what would be built where, without building it
        records[root.name] = record
        root.mkdir(parents=True, exist_ok=True)
        (root / "sft_stats.json").write_text("{}")

    monkeypatch.setattr(tiny_models, "_build_once", fake_build_once)
    assert prepare_demo(tmp_path, seed=0, sft_steps=300).root.name == f"demo-{DEFAULT_KEY}"
    assert prepare_demo(tmp_path, seed=0, sft_steps=300, sft_seed=None).root.name == f"demo-{DEFAULT_KEY}"
    assert prepare_demo(tmp_path, seed=0, sft_steps=300, sft_seed=0).root.name == f"demo-{DEFAULT_KEY}"
    assert records[f"demo-{DEFAULT_KEY}"] == {
        "v": 1,
        "seed": 0,
        "sft": {"steps": 300, "lr": 0.003, "batch_size": 32, "n_sentences": 600, "seed": 0, "weight_decay": 0.0},
        "spec": dataclasses.asdict(DEMO_SPEC),
    }
    other = prepare_demo(tmp_path, seed=0, sft_steps=300, sft_seed=1).root.name
    assert other != f"demo-{DEFAULT_KEY}" and records[other]["seed"] == 0 and records[other]["sft"]["seed"] == 1
    for bad in (True, 1.5, "1"):
        with pytest.raises(ValueError, match="sft_seed must be an integer"):
            prepare_demo(tmp_path, sft_seed=bad)


def test_a_second_sft_seed_fine_tunes_the_same_base_into_a_different_policy(tmp_path):
    """Two short SFTs of one base: identical base weights, tokenizer, config and prompts; different policies of the
    same shapes, which the soup builder accepts as ingredients."""
    import torch
    from safetensors.torch import load_file

    from openrlhf_pilaf.demo.models import prepare_demo
    from openrlhf_pilaf.trainer.salsa import SalsaConfig

    a = prepare_demo(tmp_path, seed=0, sft_steps=5, progress=False)
    b = prepare_demo(tmp_path, seed=0, sft_steps=5, sft_seed=1, progress=False)
    assert a.root != b.root
    base_a, base_b = (load_file(str(s.base / "model.safetensors")) for s in (a, b))
    assert base_a.keys() == base_b.keys() and all(torch.equal(base_a[k], base_b[k]) for k in base_a)
    pa, pb = (load_file(str(s.policy / "model.safetensors")) for s in (a, b))
    assert pa.keys() == pb.keys() and all(pa[k].shape == pb[k].shape for k in pa)
    assert max((pa[k] - pb[k]).abs().max().item() for k in pa) > 1e-3
    assert any(not torch.equal(pa[k], base_a[k]) for k in pa) and any(not torch.equal(pb[k], base_b[k]) for k in pb)
    for name in ("tokenizer.json", "config.json"):
        assert (a.policy / name).read_text() == (b.policy / name).read_text()
    assert a.train_prompts.read_text() == b.train_prompts.read_text()
    assert a.eval_prompts.read_text() == b.eval_prompts.read_text()
    soup = SalsaConfig(ingredients=[str(a.policy), str(b.policy)], output=str(tmp_path / "soup")).build()
    s = load_file(str(soup / "model.safetensors"))
    k = next(iter(pa))
    torch.testing.assert_close(s[k], 0.5 * pa[k] + 0.5 * pb[k])
