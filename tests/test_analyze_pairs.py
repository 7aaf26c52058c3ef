"""The pair analysis reads |d| and the label statistics back from what the pair log says: numbers checked
against hand computations on constructed logs (written through the real row builder and `PairLog`),
groups by round and step bin, seeds pooled, and the CLI's refusals naming the directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from openrlhf_pilaf.analysis.pairs import (
    ALL,
    PairAnalysisError,
    analyse_runs,
    group_rows,
    implicit_reward_gap,
    load_pair_rows,
    pair_kind,
    pair_stats,
    plot_abs_d,
    render_table,
    step_bin_edges,
    vanilla_gradient_weight,
)
from openrlhf_pilaf.cli import analyze_pairs
from openrlhf_pilaf.pairs import CandidatePair, LabelledPair, PairLog, Response, pair_row

BETA = 0.5


def make_row(
    pair_id: str,
    *,
    step: int = 1,
    logp: tuple[float, float, float, float] = (-1.0, -1.0, -1.0, -1.0),
    branches: tuple[str, str] = ("policy", "policy"),
    tokens: tuple[tuple[int, ...], tuple[int, ...]] = ((5,), (6,)),
    scores: tuple[float, float] = (1.0, 0.0),
    label: str = "a",
    sampler: str = "vanilla",
) -> dict:
    """A real pair-log row; logp = (policy a, ref a, policy b, ref b), summed over the response (put on its
    first token, the others 0, so the sums are exact)."""
    pol_a, ref_a, pol_b, ref_b = logp

    def response(ids: tuple[int, ...], branch: str, pol: float, ref: float) -> Response:
        rest = (0.0,) * (len(ids) - 1)
        w = {"policy": 0.0, "reference": -1.0, "pi_plus": BETA, "pi_minus": -BETA}.get(branch, 0.3)
        return Response(ids, branch, w, (pol, *rest), (ref, *rest))

    a = response(tokens[0], branches[0], pol_a, ref_a)
    b = response(tokens[1], branches[1], pol_b, ref_b)
    pair = CandidatePair(pair_id, step, 0, (1, 2), a, b, prompt="x")
    return pair_row(LabelledPair(pair, *scores, label), sampler=sampler, response_a="ya", response_b="yb")


def gap_row(pair_id: str, d_over_beta: float, **kw) -> dict:
    """A row whose d is beta * d_over_beta: log-probs chosen so a's implicit reward minus b's is that."""
    return make_row(pair_id, logp=(-1.0 + d_over_beta, -1.0, -2.0, -2.0), **kw)


def write_run(
    root: Path,
    name: str,
    rows_by_log: dict[str, list[dict]],
    *,
    sampler: str = "vanilla",
    mode: str = "online",
    beta: float | None = BETA,
    seed: int = 1,
    update_reference: bool = False,
) -> Path:
    """A run directory: config.json as the launcher writes it (nested dicts) and pair logs via PairLog.append;
    rows_by_log maps the log's path in the run ("pairs.jsonl", "round_2/pairs.jsonl") to its rows."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    dpo = {"mode": mode, "update_reference": update_reference} | ({} if beta is None else {"beta": beta})
    config = {"pilaf": {"sampler": sampler}, "dpo": dpo, "train": {"seed": seed}}
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    for rel, rows in rows_by_log.items():
        log = PairLog(run_dir / rel)
        for row in rows:
            log.append(row)
    return run_dir


def stats_of(result: dict, group: str, bucket: str, kind: str) -> dict:
    (g,) = [g for g in result["groups"] if g["name"] == group]
    (row,) = [r for r in g["table"] if r["bucket"] == bucket and r["kind"] == kind]
    return row


# ------------------------------------------------------------------------------------------------ numbers


def test_gap_matches_the_hand_computation_and_quantiles():
    row = make_row("p0", logp=(-3.0, -4.5, -2.0, -1.0))
    # d = 0.5 * ((-3 + 4.5) - (-2 + 1)) = 0.5 * (1.5 + 1) = 1.25
    assert implicit_reward_gap(row, BETA) == pytest.approx(1.25)
    assert implicit_reward_gap(row, 2.0) == pytest.approx(5.0)

    # |d| = 0.1, 0.2, ..., 1.0 (signs alternate: |d| must not care which response is a)
    rows = [gap_row(f"p{i}", (-1) ** i * 2 * (i + 1) / 10) for i in range(10)]
    stats = pair_stats(rows, BETA)
    values = [(i + 1) / 10 for i in range(10)]
    assert stats.n == 10
    assert stats.abs_d_mean == pytest.approx(0.55)
    assert stats.abs_d_median == pytest.approx(0.55)
    assert stats.abs_d_q10 == pytest.approx(0.19)  # linear interpolation: position 0.9 between 0.1 and 0.2
    assert stats.abs_d_q25 == pytest.approx(0.325)
    assert stats.abs_d_q75 == pytest.approx(0.775)
    assert stats.abs_d_q90 == pytest.approx(0.91)
    assert stats.share_abs_d_ge_0_5 == pytest.approx(0.6)  # 0.5 .. 1.0
    assert stats.share_abs_d_ge_1 == pytest.approx(0.1)  # only 1.0
    weights = [4 * s * (1 - s) for s in (1 / (1 + math.exp(-v)) for v in values)]
    assert stats.vanilla_weight_mean == pytest.approx(sum(weights) / 10)


def test_vanilla_weight_is_one_at_zero_and_does_not_overflow():
    assert vanilla_gradient_weight(0.0) == pytest.approx(1.0)
    assert vanilla_gradient_weight(1.0) == pytest.approx(0.7864, abs=1e-4)
    assert vanilla_gradient_weight(-1.0) == vanilla_gradient_weight(1.0)
    assert vanilla_gradient_weight(1e4) == 0.0


def test_identical_ties_and_label_agreement():
    rows = [
        make_row("same", tokens=((5, 6), (5, 6)), scores=(0.5, 0.5), label="a"),  # identical, tie
        make_row("tie", scores=(0.2, 0.2), label="b"),  # tie: not counted for agreement
        make_row("agree_a", scores=(1.0, 0.0), label="a"),  # gap 1
        make_row("agree_b", scores=(-1.0, 2.0), label="b"),  # gap 3
        make_row("disagree", scores=(3.0, 1.0), label="b"),  # gap 2
    ]
    human = make_row("human", tokens=((7,), (7,)), label="a")
    human.update(score_a=None, score_b=None)  # people's labels carry no scores
    stats = pair_stats([*rows, human], BETA)
    assert stats.n == 6 and stats.n_scored == 5 and stats.n_untied == 3
    assert stats.identical == pytest.approx(2 / 6)
    assert stats.tie_rate == pytest.approx(2 / 5)
    assert stats.mean_score_gap == pytest.approx((0 + 0 + 1 + 3 + 2) / 5)
    assert stats.label_agreement == pytest.approx(2 / 3)


def test_empty_and_unscored_groups_give_nan_not_a_crash():
    empty = pair_stats([], BETA)
    assert empty.n == 0 and math.isnan(empty.abs_d_median) and math.isnan(empty.identical)
    assert empty.to_dict()["abs_d_q90"] is None and empty.to_dict()["n"] == 0
    human = make_row("h")
    human.update(score_a=None, score_b=None)
    stats = pair_stats([human], BETA)
    assert stats.n_scored == 0 and math.isnan(stats.tie_rate) and math.isnan(stats.label_agreement)
    assert stats.abs_d_median == pytest.approx(0.0)


def test_pair_kind_ignores_the_order_of_a_and_b():
    pm, mp = make_row("1", branches=("pi_minus", "pi_plus")), make_row("2", branches=("pi_plus", "pi_minus"))
    assert pair_kind(pm) == pair_kind(mp) == "pi_plus x pi_minus"
    assert pair_kind(make_row("3", branches=("reference", "policy"))) == "policy x reference"
    assert pair_kind(make_row("4")) == "policy x policy"
    bad = make_row("5")
    bad["branch_a"] = "elsewhere"
    with pytest.raises(ValueError, match="elsewhere"):
        pair_kind(bad)


# ------------------------------------------------------------------------------------------------ groups


def test_iterative_runs_group_by_round(tmp_path):
    logs = {
        "round_1/pairs.jsonl": [gap_row(f"r1-{i}", 0.2, step=1) for i in range(3)],  # first_round_sampler
        "round_2/pairs.jsonl": [
            gap_row("r2-0", 4.0, step=2, branches=("pi_minus", "pi_plus"), sampler="pilaf"),
            gap_row("r2-1", 0.0, step=2, branches=("policy", "policy"), sampler="pilaf"),
        ],
    }
    run_dir = write_run(tmp_path, "it", logs, sampler="pilaf", mode="iterative")
    (run_dir / "round_3").mkdir()  # a round whose pairs await people's labels: no pairs.jsonl yet
    run = load_pair_rows(run_dir)
    assert run.mode == "iterative" and run.beta == BETA and run.label == "it" and len(run.rows) == 5
    assert run.rounds_without_pairs == [3]
    groups = group_rows(run.rows, run.mode, sampler=run.sampler)
    assert list(groups) == [
        (ALL, ALL),
        (ALL, "policy x policy"),
        (ALL, "pi_plus x pi_minus"),
        ("round 1 (vanilla pairs)", ALL),
        ("round 1 (vanilla pairs)", "policy x policy"),
        ("round 2", ALL),
        ("round 2", "policy x policy"),
        ("round 2", "pi_plus x pi_minus"),
    ]
    assert [r["pair_id"] for r in groups[("round 2", "pi_plus x pi_minus")]] == ["r2-0"]
    result = analyse_runs([run_dir])
    assert stats_of(result, "pilaf (iterative)", "round 2", "pi_plus x pi_minus")["abs_d_median"] == pytest.approx(2.0)
    assert stats_of(result, "pilaf (iterative)", "round 1 (vanilla pairs)", ALL)["n"] == 3


def test_a_round_log_holding_another_rounds_pair_is_refused_and_update_reference_is_noted(tmp_path, capsys):
    moved = write_run(tmp_path, "moved", {"round_2/pairs.jsonl": [gap_row("r1-0", 1.0, step=1)]}, mode="iterative")
    with pytest.raises(PairAnalysisError, match="step 1 in the log of round 2"):
        load_pair_rows(moved)
    logs = {f"round_{k}/pairs.jsonl": [gap_row(f"r{k}", 1.0, step=k)] for k in (1, 2)}
    updated = write_run(tmp_path, "upd", logs, mode="iterative", update_reference=True)
    assert analyze_pairs.main([str(updated)]) == 0
    assert "--dpo.update_reference" in capsys.readouterr().err


def test_online_steps_fall_into_equal_width_bins(tmp_path):
    assert step_bin_edges(1, 40, 4) == [(1, 10), (11, 20), (21, 30), (31, 40)]
    assert step_bin_edges(1, 5, 4) == [(1, 2), (3, 4), (5, 5)]
    assert step_bin_edges(1, 2, 4) == [(1, 1), (2, 2)]
    rows = [gap_row(f"s{s}", 0.1 * s, step=s) for s in range(1, 41)]
    groups = group_rows(rows, "online", step_bins=4)
    buckets = [b for b, k in groups if k == ALL and b != ALL]
    assert buckets == ["steps 1-10", "steps 11-20", "steps 21-30", "steps 31-40"]
    assert [r["step"] for r in groups[("steps 11-20", ALL)]] == list(range(11, 21))
    # A common range (several runs of different lengths) lists empty bins too, so tables line up.
    short = group_rows(rows[:10], "online", step_bins=2, steps=(1, 40))
    assert len(short[("steps 1-20", ALL)]) == 10 and short[("steps 21-40", ALL)] == []
    assert ("steps 21-40", "policy x policy") not in short


def test_seeds_of_a_sampler_pool_into_one_row_set(tmp_path):
    seed1 = write_run(tmp_path, "p1", {"pairs.jsonl": [gap_row(f"s{i}", 1.0, step=i + 1) for i in range(4)]}, seed=1)
    seed2 = write_run(tmp_path, "p2", {"pairs.jsonl": [gap_row(f"s{i}", 3.0, step=i + 1) for i in range(4)]}, seed=2)
    other = write_run(
        tmp_path, "q", {"pairs.jsonl": [gap_row("s0", 8.0, branches=("pi_plus", "pi_minus"))]}, sampler="pilaf"
    )
    result = analyse_runs([seed1, seed2, other], step_bins=2)
    assert [g["name"] for g in result["groups"]] == ["vanilla", "pilaf"]
    vanilla = stats_of(result, "vanilla", ALL, ALL)
    assert vanilla["n"] == 8  # the same pair ids in two seeds are two pairs each
    assert vanilla["abs_d_median"] == pytest.approx(1.0)  # half at 0.5, half at 1.5
    assert vanilla["share_abs_d_ge_1"] == pytest.approx(0.5)
    assert stats_of(result, "vanilla", "steps 1-2", ALL)["n"] == 4
    assert stats_of(result, "pilaf", "steps 3-4", ALL)["n"] == 0  # the pilaf run's one step: bins are shared
    assert result["groups"][0]["runs"] == ["p1", "p2"]
    per_run = analyse_runs([seed1, seed2], group_by="run")
    assert [g["name"] for g in per_run["groups"]] == ["p1", "p2"]
    table = render_table(result)
    assert table.splitlines()[0].startswith("| sampler | bucket | pair kind | pairs | median \\|d\\|")
    assert "| vanilla | all | policy x policy | 8 | 1.000 |" in table
    assert "| vanilla | all | all |" not in table  # one kind: its row says it all


def test_a_torn_last_line_is_left_out_and_the_log_is_not_modified(tmp_path):
    run_dir = write_run(tmp_path, "torn", {"pairs.jsonl": [gap_row("s0", 1.0), gap_row("s1", 1.0)]})
    path = run_dir / "pairs.jsonl"
    with open(path, "a") as f:
        f.write('{"pair_id": "s2", "st')  # a run killed mid-write (or still writing)
    before = path.read_bytes()
    run = load_pair_rows(run_dir)
    assert [r["pair_id"] for r in run.rows] == ["s0", "s1"]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no beta", "no dpo.beta"),
        ("no config", "no config.json"),
        ("empty log", "empty"),
        ("corrupt line", "pairs.jsonl:1"),
        ("bad logp", "logp_policy_a must be a finite number"),
    ],
)
def test_refusals_name_the_directory(tmp_path, breakage, message):
    rows = [] if breakage == "empty log" else [gap_row("s0", 1.0), gap_row("s1", 1.0)]
    run_dir = write_run(tmp_path, "broken", {"pairs.jsonl": rows}, beta=None if breakage == "no beta" else BETA)
    path = run_dir / "pairs.jsonl"
    if breakage == "no config":
        (run_dir / "config.json").unlink()
    elif breakage == "corrupt line":
        path.write_text("{not json\n" + path.read_text())
    elif breakage == "bad logp":
        lines = path.read_text().splitlines()
        row = json.loads(lines[0]) | {"logp_policy_a": "high"}
        path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    with pytest.raises(PairAnalysisError, match=message) as info:
        load_pair_rows(run_dir)
    assert str(run_dir) in str(info.value)


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_prints_the_table_and_writes_plot_and_json(tmp_path, capsys):
    online = write_run(
        tmp_path,
        "pilaf_s1",
        {
            "pairs.jsonl": [
                gap_row("s1-a", 0.4, step=1, branches=("pi_minus", "pi_plus"), sampler="pilaf"),
                gap_row("s1-b", 4.0, step=1, branches=("policy", "policy"), sampler="pilaf"),
                gap_row("s2-a", -2.0, step=2, branches=("pi_plus", "pi_minus"), sampler="pilaf"),
                gap_row("s2-b", 6.0, step=2, branches=("policy", "policy"), sampler="pilaf", scores=(0.0, 0.0)),
            ]
        },
        sampler="pilaf",
    )
    vanilla = write_run(tmp_path, "vanilla_s1", {"pairs.jsonl": [gap_row(f"s{i}", 1.0, step=i) for i in (1, 2)]})
    plot, out = tmp_path / "figs" / "abs_d.png", tmp_path / "out" / "pairs.json"
    argv = [str(online), str(vanilla), "--step_bins", "2", "--plot", str(plot), "--json", str(out)]
    assert analyze_pairs.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| pilaf | step 2 | pi_plus x pi_minus | 1 | 1.000 |" in printed
    assert f"wrote the |d| plot to {plot}" in printed and f"wrote the analysis to {out}" in printed
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = json.loads(out.read_text())
    pilaf = stats_of(result, "pilaf", ALL, ALL)
    assert pilaf["n"] == 4
    assert pilaf["abs_d_median"] == pytest.approx(float(np.median([0.2, 2.0, 1.0, 3.0])))
    assert pilaf["share_abs_d_ge_1"] == pytest.approx(0.75)
    assert pilaf["tie_rate"] == pytest.approx(0.25) and pilaf["label_agreement"] == pytest.approx(1.0)
    assert stats_of(result, "pilaf", "step 1", "policy x policy")["abs_d_mean"] == pytest.approx(2.0)
    assert stats_of(result, "vanilla", "step 2", ALL)["n"] == 1
    assert result["groups"][0]["abs_d"]["step 2"]["pi_plus x pi_minus"] == pytest.approx([1.0])
    assert result["runs"][0]["beta"] == BETA and result["runs"][0]["pairs"] == 4
    # The JSON draws the same figure again.
    again = plot_abs_d(result, tmp_path / "again.png")
    assert again.stat().st_size > 1000


def test_cli_refuses_a_missing_dir_or_one_without_pairs(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert analyze_pairs.main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    no_pairs = write_run(tmp_path, "fresh", {}, mode="iterative")
    (no_pairs / "round_1").mkdir()
    assert analyze_pairs.main([str(no_pairs)]) == 2
    err = capsys.readouterr().err
    assert str(no_pairs) in err and "no pair log" in err and len(err.strip().splitlines()) == 1
    assert not (no_pairs / "round_1" / "pairs.jsonl").exists()  # reading creates nothing

    good = write_run(tmp_path, "good", {"pairs.jsonl": [gap_row("s0", 1.0)]})
    assert analyze_pairs.main([str(good), "--plot", str(tmp_path / "d.xyz")]) == 2
    assert "--plot" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        analyze_pairs.main([str(good), "--step_bins", "0"])
    assert info.value.code == 2 and "--step_bins" in capsys.readouterr().err
