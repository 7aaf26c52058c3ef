"""`python -m openrlhf_pilaf.cli.analyze_pairs RUN_DIR [RUN_DIR ...] [--step_bins 4] [--group_by sampler]
[--plot PATH.png] [--json PATH.json]`

Read the runs' pair logs and tabulate, per sampler, per round (iterative) or step bin (online) and per
branch pair, the implicit reward gap |d| of the labelled pairs (d = beta * the gap in log pi - log
pi_ref): vanilla DPO weights a pair by sigma'(d) and PILAF by about 1 + cosh d, so the samplers can only
differ where |d| reaches about 1. Beside it: vanilla's mean relative gradient weight 4 sigma'(d), and what
the labels were worth (identical responses, ties, the mean score gap, agreement of the label with the
higher score). Seeds of one sampler pool into one set of rows. The table is printed as markdown.
Exit status: 0 done, 2 refused (a run directory without a config or a pair log, a malformed log, a
plot format matplotlib cannot write, an output that cannot be written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openrlhf_pilaf.analysis.pairs import GROUP_BY, PairAnalysisError, analyse_runs, plot_abs_d, render_table
from openrlhf_pilaf.cli.common import setup_logging

INSTALL_HINT = "pip install 'openrlhf-pilaf[plot]'"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_pilaf.cli.analyze_pairs",
        description=" ".join(__doc__.split("\n\n")[1].split()),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory (--ckpt.output_dir)")
    parser.add_argument(
        "--step_bins", type=_positive_int, default=4, help="online runs: equal-width step bins (default 4)"
    )
    parser.add_argument(
        "--group_by",
        choices=GROUP_BY,
        default="sampler",
        help="sampler: pool the runs (seeds) of one sampler; run: one set of rows per run directory",
    )
    parser.add_argument("--plot", default=None, metavar="PATH.png", help="also draw the |d| distributions here")
    parser.add_argument("--json", default=None, metavar="PATH.json", help="also write the analysis here as JSON")
    return parser


def _plot_format_error(path: Path) -> str | None:
    """Why --plot cannot be written, before any work is done: no matplotlib, or a suffix it cannot write."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        return f"--plot needs matplotlib: {INSTALL_HINT}"
    fmt = path.suffix.lstrip(".").lower() or "png"
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt not in supported:
        return f"--plot {path}: matplotlib cannot write .{fmt}; use one of {', '.join(sorted(supported))}"
    return None


def _notes(result: dict) -> list[str]:
    """What the table cannot say itself: runs whose loss's reference was not the logged one."""
    return [
        f"note: {run['run_dir']}: --dpo.update_reference: from round 2 on the loss's reference was the sampling "
        "policy (d = 0 there at the start of each round); d here is against the fixed reference"
        for run in result["runs"]
        if run["update_reference"]
    ]


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = make_parser().parse_args(argv)
    plot = Path(args.plot) if args.plot is not None else None
    if plot is not None and (why := _plot_format_error(plot)) is not None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    try:
        result = analyse_runs(args.run_dirs, step_bins=args.step_bins, group_by=args.group_by)
    except PairAnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(render_table(result))
    for note in _notes(result):
        print(note, file=sys.stderr)
    if plot is not None:
        try:
            print(f"wrote the |d| plot to {plot_abs_d(result, plot)}")
        except OSError as e:
            print(f"error: --plot {plot}: cannot write it: {e}", file=sys.stderr)
            return 2
    if args.json is not None:
        from openrlhf_pilaf.utils.atomic_io import write_json_atomic

        try:
            print(f"wrote the analysis to {write_json_atomic(args.json, result)}")
        except OSError as e:
            print(f"error: --json {args.json}: cannot write it: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
