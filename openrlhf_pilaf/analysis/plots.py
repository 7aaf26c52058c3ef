"""The figures of run directories: reward against KL and J against labels spent (`make_figure`), one
colour per sampler (`SAMPLER_COLOURS`, shared with `analysis.pairs.plot_abs_d` and the bench reports).

matplotlib is imported only inside `make_figure` (an Agg canvas, no pyplot state), so this module loads
without it; `python -m openrlhf_pilaf.cli.plot` is the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from openrlhf_pilaf.analysis.runs import RunCurve

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The samplers this package ships, each with its own colour whatever else is plotted beside it, so
#: figures of different experiments can be compared at a glance.
SAMPLER_COLOURS: dict[str, str] = {
    "vanilla": "tab:blue",
    "best_of_n": "tab:orange",
    "hybrid": "tab:green",
    "pilaf": "tab:red",
}
#: For samplers not in SAMPLER_COLOURS, in order of first appearance (cycled past the end).
EXTRA_COLOURS: tuple[str, ...] = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def sampler_colours(curves: Sequence[RunCurve]) -> dict[str, str]:
    """Colour of every sampler among `curves`, in legend order: the known ones first, then the rest as seen."""
    present = {c.sampler for c in curves}
    colours = {s: c for s, c in SAMPLER_COLOURS.items() if s in present}
    unknown = dict.fromkeys(c.sampler for c in curves if c.sampler not in SAMPLER_COLOURS)
    for i, sampler in enumerate(unknown):
        colours[sampler] = EXTRA_COLOURS[i % len(EXTRA_COLOURS)]
    return colours


def _legend_label(sampler: str, curves: Sequence[RunCurve]) -> str:
    seeds = sorted({c.seed for c in curves if c.sampler == sampler})
    runs = sum(c.sampler == sampler for c in curves)
    text = f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))
    if runs != len(seeds):  # several runs share a seed (e.g. online and iterative): say how many lines there are
        text += f"; {runs} runs"
    return f"{sampler} ({text})"


def make_figure(curves: Sequence[RunCurve], *, title: str | None = None) -> Figure:
    """Two axes: reward against KL (left) and J against pairs labelled (right), one line per run.

    Each run is exactly one data line per axes (a marker at each evaluation); the left axes adds 95%
    intervals as faint bars (reward_ci95 and 1.96 * kl_se) drawn as collections, not lines. The
    figure has an Agg canvas and no pyplot state, so it works without a display and is freed with it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not curves:
        raise ValueError("make_figure needs at least one run")
    colours = sampler_colours(curves)
    fig = Figure(figsize=(12.0, 4.8), layout=None)
    FigureCanvasAgg(fig)
    ax_kl, ax_j = fig.subplots(1, 2)
    for curve in curves:
        colour = colours[curve.sampler]
        kl, reward = curve.column("kl"), curve.column("reward")
        kl_err = [1.96 * se for se in curve.column("kl_se")]
        reward_err = curve.column("reward_ci95")
        style = {"color": colour, "marker": "o", "markersize": 4, "linewidth": 1.4, "alpha": 0.9}
        ax_kl.plot(kl, reward, label=curve.label, **style)
        if any(e == e for e in kl_err + reward_err):  # some interval is known (NaN != NaN)
            ax_kl.errorbar(
                kl, reward, xerr=kl_err, yerr=reward_err, fmt="none", ecolor=colour, elinewidth=0.8, alpha=0.3
            )
        ax_j.plot(curve.column("pairs_labelled"), curve.column("J"), label=curve.label, **style)

    ax_kl.set_title("Reward against KL")
    ax_kl.set_xlabel(r"KL$(\pi \,\|\, \pi_{\mathrm{ref}})$, nats per response")
    ax_kl.set_ylabel("oracle reward (mean, 95% interval)")
    ax_j.set_title("J against labels spent")
    ax_j.set_xlabel("preference pairs labelled")
    ax_j.set_ylabel("J = reward − β·KL")
    for ax in (ax_kl, ax_j):
        ax.grid(True, alpha=0.3)
    # One entry per sampler (its seeds share the colour), from proxy handles that are not on the axes.
    handles = [Line2D([], [], color=c, marker="o", markersize=4, linewidth=1.4) for c in colours.values()]
    ax_kl.legend(handles, [_legend_label(s, curves) for s in colours], title="sampler", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
