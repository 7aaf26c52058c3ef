"""Reading finished (or running) run directories back into numbers: the curves the plot CLI draws.

Kept free of matplotlib so that notebooks, tests and other reports can load runs without a plotting
stack: the drawing (`analysis.plots`, `analysis.pairs.plot_abs_d`) imports it only when it draws; the
command lines are `openrlhf_pilaf.cli.plot` and `openrlhf_pilaf.cli.analyze_pairs`.
"""

from openrlhf_pilaf.analysis.runs import POINT_FIELDS, RunCurve, RunDirError, load_run, load_runs

__all__ = ["POINT_FIELDS", "RunCurve", "RunDirError", "load_run", "load_runs"]
