"""bench/reproduce_results.py's statistics and page rewriting, on known answers (the runs themselves are the
launcher's, tested elsewhere; the recorded run is in docs/results.md)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from bench.reproduce_results import (
    ABLATIONS,
    baseline_of,
    detectable_difference,
    labels_to_reach,
    make_parser,
    pair_diagnostics,
    plan_runs,
    rewrite_docs,
    t_interval,
    welch_p,
)


def test_t_interval_by_hand():
    mean, hw = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hw == pytest.approx(stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3))  # sd 1, n 3: 4.303 / 1.732
    assert math.isnan(t_interval([5.0])[1])


def test_labels_to_reach_interpolates_and_says_never():
    curve = [(0, 0.0), (100, 1.0), (200, 2.0)]
    assert labels_to_reach(curve, 1.5) == pytest.approx(150.0)
    assert labels_to_reach(curve, 0.0) == 0
    assert labels_to_reach(curve, 2.0) == pytest.approx(200.0)
    assert labels_to_reach(curve, 2.5) is None


def test_detectable_difference_has_about_80_percent_power_and_welch_keeps_its_size():
    """At 5 seeds a side, a true difference equal to the detectable difference (sigma known) is found by
    Welch's test in ~77% of 4000 seeded experiments (tolerance 0.72-0.85: the t-quantile formula is an
    approximation), and no difference in at most 6% (the 5% level; SE of a rate ~0.007)."""
    rng = np.random.default_rng(0)
    n, sims = 5, 4000
    ones = [1.0, -1.0] * 3  # sd ~1.1: the formula on a sample of unit spread
    delta = detectable_difference(ones[:n], ones[1 : n + 1])
    expected = (stats.t.ppf(0.975, 2 * n - 2) + stats.t.ppf(0.8, 2 * n - 2)) * math.sqrt(
        2 * np.var(ones[:n], ddof=1) / n
    )
    assert delta == pytest.approx(expected)
    sd = math.sqrt(np.var(ones[:n], ddof=1))
    found = np.mean([welch_p(rng.normal(0, sd, n), rng.normal(delta, sd, n)) < 0.05 for _ in range(sims)])
    false = np.mean([welch_p(rng.normal(0, sd, n), rng.normal(0, sd, n)) < 0.05 for _ in range(sims)])
    assert 0.72 <= found <= 0.85, found
    assert false <= 0.06, false


def test_pair_diagnostics_on_known_pairs(tmp_path):
    rows = [
        dict(token_ids_a=[1, 2], token_ids_b=[1, 2], score_a=0.5, score_b=0.5, policy_forwards=2, reference_forwards=0),
        dict(token_ids_a=[1, 2], token_ids_b=[3], score_a=1.0, score_b=-1.0, policy_forwards=2, reference_forwards=2),
        dict(token_ids_a=[4], token_ids_b=[3], score_a=0.0, score_b=0.0, policy_forwards=2, reference_forwards=0),
        dict(token_ids_a=[5], token_ids_b=[6], score_a=2.0, score_b=1.0, policy_forwards=8, reference_forwards=0),
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = pair_diagnostics([tmp_path])
    assert d == {"pairs": 4, "identical": 0.25, "gold_tie": 0.5, "mean_gap": 0.75, "forwards_per_pair": 4.0}


def test_rewrite_docs_replaces_only_between_markers(tmp_path):
    page = tmp_path / "results.md"
    page.write_text("# T\nhand text\n<!-- generated:a -->\nold\n<!-- /generated:a -->\nmore hand text\n")
    rewrite_docs(page, {"a": "| new |", "absent": "ignored"})
    assert page.read_text() == "# T\nhand text\n<!-- generated:a -->\n| new |\n<!-- /generated:a -->\nmore hand text\n"


def test_plan_gives_every_run_its_own_directory_and_the_ablation_its_flag(tmp_path):
    args = make_parser().parse_args(["--out", str(tmp_path), "--seeds", "5", "--ablation_seeds", "3"])
    runs = plan_runs(args)
    assert len(runs) == 4 * 5 + 2 * 5 + len(ABLATIONS) * 3
    assert len({r.out for r in runs}) == len(runs)
    ablation = [r for r in runs if r.experiment == "ablation"]
    assert {r.row for r in ablation} == set(ABLATIONS)
    assert all(r.extra == ABLATIONS[r.row][1] and r.sampler == ABLATIONS[r.row][0] for r in ablation)
    rows = {(r.experiment, r.row) for r in runs}
    for r in runs:
        base = baseline_of(r.experiment, r.row)
        assert base is None or base in rows, (r.row, base)
        assert (base is None) == (r.sampler == "vanilla")  # every PILAF row is judged against a vanilla one
