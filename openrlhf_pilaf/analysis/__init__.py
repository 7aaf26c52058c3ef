"""Reading finished (or running) run directories back into numbers: the curves the plot CLI draws.

Kept free of matplotlib so that notebooks, tests and other reports can load runs without a plotting
stack; the drawing lives in `openrlhf_pilaf.cli.plot`.
"""

from openrlhf_pilaf.analysis.runs import POINT_FIELDS, RunCurve, RunDirError, load_run, load_runs

__all__ = ["POINT_FIELDS", "RunCurve", "RunDirError", "load_run", "load_runs"]
