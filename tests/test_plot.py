"""The plot CLI and the run-directory reader: curves drawn from what eval.jsonl says, refusals that name
the directory. Checked on matplotlib's objects (lines, colours, legend), not on pixels."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from matplotlib.colors import to_rgba  # matplotlib is in the CPU stack and the [test] extra: no skip

from openrlhf_pilaf.analysis.runs import RunDirError, load_run, load_runs
from openrlhf_pilaf.cli import plot


def _record(step: int, seed: int, offset: float) -> dict:
    """An evaluation whose numbers differ per run and per step, so a mixed-up curve cannot pass."""
    kl = 0.5 * step + 0.01 * seed + offset
    reward = 1.0 + 0.3 * step - 0.02 * seed + offset
    return {
        "step": step,
        "pairs_labelled": 4 * step,
        "labels_spent": 8 * step,
        "reward": reward,
        "reward_ci95": 0.1 + 0.01 * step,
        "kl": kl,
        "kl_se": 0.05,
        "J": reward - 0.1 * kl,
        "beta": 0.1,
        "n": 16.0,
    }


def write_run(root: Path, name: str, sampler: str, seed: int, records: list[dict], mode: str = "online") -> Path:
    run_dir = root / name
    run_dir.mkdir()
    config = {"pilaf": {"sampler": sampler}, "dpo": {"mode": mode, "beta": 0.1}, "train": {"seed": seed}}
    (run_dir / "config.json").write_text(json.dumps(config, indent=1))
    (run_dir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


@pytest.fixture
def three_runs(tmp_path) -> dict[str, tuple[Path, list[dict]]]:
    """Two pilaf seeds and one vanilla run; records written out of step order (sorting is checked)."""
    runs = {}
    for name, sampler, seed, offset in [("p1", "pilaf", 1, 0.0), ("p2", "pilaf", 2, 0.2), ("v0", "vanilla", 0, 0.4)]:
        records = [_record(s, seed, offset) for s in (0, 1, 2, 3)]
        shuffled = [records[2], records[0], records[3], records[1]]
        runs[name] = (write_run(tmp_path, name, sampler, seed, shuffled), records)
    runs["p2"][1][1]["reward_ci95"] = None  # a null interval: the point still draws, its bar is a NaN
    (runs["p2"][0] / "eval.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [runs["p2"][1][i] for i in (3, 1, 0, 2)])
    )
    return runs


def _lines_by_label(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def test_figure_draws_one_line_per_run_from_the_records(three_runs):
    curves = load_runs([d for d, _ in three_runs.values()])
    fig = plot.make_figure(curves)
    ax_kl, ax_j = fig.axes
    assert len(ax_kl.get_lines()) == 3
    assert len(ax_j.get_lines()) == 3
    left, right = _lines_by_label(ax_kl), _lines_by_label(ax_j)
    for curve, (_, records) in zip(curves, three_runs.values(), strict=True):
        assert [p["step"] for p in curve.points] == [0, 1, 2, 3]
        assert list(left[curve.label].get_xdata()) == pytest.approx([r["kl"] for r in records])
        assert list(left[curve.label].get_ydata()) == pytest.approx([r["reward"] for r in records])
        assert list(right[curve.label].get_xdata()) == pytest.approx([r["pairs_labelled"] for r in records])
        assert list(right[curve.label].get_ydata()) == pytest.approx([r["J"] for r in records])

    by_sampler = {c.label: c.sampler for c in curves}
    colours = {label: to_rgba(line.get_color()) for label, line in left.items()}
    pilaf = [colours[label] for label, s in by_sampler.items() if s == "pilaf"]
    vanilla = [colours[label] for label, s in by_sampler.items() if s == "vanilla"]
    assert len(pilaf) == 2 and pilaf[0] == pilaf[1]
    assert vanilla[0] != pilaf[0]
    assert {label: to_rgba(line.get_color()) for label, line in right.items()} == colours

    legend = ax_kl.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) == 2
    # the fixed sampler order (vanilla, best_of_n, hybrid, pilaf), whatever order the runs came in
    assert texts[0] == "vanilla (seed 0)"
    assert texts[1] == "pilaf (seeds 1, 2)"
    assert [to_rgba(h.get_color()) for h in legend.legend_handles] == [vanilla[0], pilaf[0]]
    for ax in (ax_kl, ax_j):
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert ax_kl.get_xlabel() != ax_j.get_xlabel()


def test_samplers_keep_their_colours_and_unknown_ones_get_others(tmp_path):
    dirs = [
        write_run(tmp_path, name, sampler, 0, [_record(0, 0, 0.0), _record(1, 0, 0.1)])
        for name, sampler in [("a", "my_sampler"), ("b", "hybrid"), ("c", "best_of_n")]
    ]
    colours = plot.sampler_colours(load_runs(dirs))
    assert list(colours) == ["best_of_n", "hybrid", "my_sampler"]  # legend order: known ones first
    assert colours["hybrid"] == plot.SAMPLER_COLOURS["hybrid"]
    assert colours["my_sampler"] not in plot.SAMPLER_COLOURS.values()
    assert len({to_rgba(c) for c in plot.SAMPLER_COLOURS.values()}) == 4


def test_main_writes_a_png(three_runs, tmp_path, capsys):
    from matplotlib.image import imread

    out = tmp_path / "figs" / "curves.png"
    assert plot.main([str(d) for d, _ in three_runs.values()] + ["--out", str(out), "--title", "three runs"]) == 0
    assert str(out) in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > image.shape[0]  # two plots side by side


def _no_eval(run_dir: Path) -> None:
    (run_dir / "eval.jsonl").unlink()


def _malformed(run_dir: Path) -> None:
    path = run_dir / "eval.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][: len(lines[1]) // 2]  # a line cut in half
    path.write_text("\n".join(lines) + "\n")


def _empty(run_dir: Path) -> None:
    (run_dir / "eval.jsonl").write_text("\n")


def _no_config(run_dir: Path) -> None:
    (run_dir / "config.json").unlink()


def _no_sampler(run_dir: Path) -> None:
    (run_dir / "config.json").write_text(json.dumps({"train": {"seed": 0}}))


def _text_value(run_dir: Path) -> None:
    (run_dir / "eval.jsonl").write_text(json.dumps({**_record(0, 0, 0.0), "kl": "0.3"}) + "\n")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_no_eval, "no eval.jsonl (the run made no evaluation: give --eval.steps and --eval.dataset)"),
        (_malformed, "eval.jsonl:2"),
        (_empty, "eval.jsonl is empty"),
        (_no_config, "no config.json"),
        (_no_sampler, "pilaf.sampler"),
        (_text_value, "kl must be a number or null"),
    ],
    ids=["no-eval", "malformed-line", "empty", "no-config", "no-sampler", "text-value"],
)
def test_refused_run_dirs_exit_2_naming_the_dir(three_runs, tmp_path, capsys, damage, expected):
    bad = three_runs["v0"][0]
    damage(bad)
    with pytest.raises(RunDirError, match=str(bad)):
        load_run(bad)
    out = tmp_path / "curves.png"
    assert plot.main([str(three_runs["p1"][0]), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:")
    assert expected in err
    assert not out.exists()


def test_a_run_given_twice_is_refused(three_runs):
    run_dir = three_runs["p1"][0]
    with pytest.raises(RunDirError, match="given twice"):
        load_runs([run_dir, run_dir.parent / ".." / run_dir.parent.name / run_dir.name])


def test_missing_matplotlib_exits_2_with_the_install_hint(three_runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "curves.png"
    assert plot.main([str(three_runs["p1"][0]), "--out", str(out)]) == 2
    assert "pip install 'openrlhf-pilaf[plot]'" in capsys.readouterr().err
    assert not out.exists()


def test_a_duplicated_step_keeps_the_last_record(tmp_path):
    first, again = _record(1, 0, 0.0), {**_record(1, 0, 0.0), "reward": 7.5, "J": 7.0}
    run_dir = write_run(tmp_path, "resumed", "pilaf", 3, [_record(0, 0, 0.0), first, _record(2, 0, 0.0), again])
    curve = load_run(run_dir)
    assert [p["step"] for p in curve.points] == [0, 1, 2]
    assert curve.points[1]["reward"] == 7.5 and curve.points[1]["J"] == 7.0
    assert curve.points[2]["reward"] == _record(2, 0, 0.0)["reward"]


def test_null_values_read_as_gaps_and_rounds_stay_apart(tmp_path):
    records = [
        {**_record(0, 0, 0.0), "round": 0},
        {**_record(2, 0, 0.0), "round": 0, "kl": None},
        {**_record(2, 0, 0.1), "round": 1},  # the same step number in the next round is another point
    ]
    curve = load_run(write_run(tmp_path, "iter", "hybrid", 0, records, mode="iterative"))
    assert [(p["round"], p["step"]) for p in curve.points] == [(0, 0), (0, 2), (1, 2)]
    assert math.isnan(curve.column("kl")[1]) and curve.column("kl")[2] == pytest.approx(records[2]["kl"])
    assert curve.mode == "iterative" and "iterative" in curve.label
    assert curve.has_finite("kl", "reward")


def test_a_run_that_draws_nothing_on_one_side_is_warned_about(tmp_path, capsys):
    records = [{k: v for k, v in _record(s, 0, 0.0).items() if k != "pairs_labelled"} for s in (0, 1)]
    run_dir = write_run(tmp_path, "old", "vanilla", 0, records)
    assert plot.main([str(run_dir), "--out", str(tmp_path / "c.png")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run_dir}: no evaluation has a finite pairs_labelled and J" in err
    assert "finite kl and reward" not in err
