"""`python -m openrlhf_pilaf.cli.plot RUN_DIR [RUN_DIR ...] [--out curves.png] [--title TEXT]`

Draw the runs' evaluations side by side: reward against KL to the reference (the frontier the samplers
are compared on) and J = reward - beta * KL against the preference pairs labelled (what each label
buys). One colour per sampler, so the seeds of one sampler read as one family.
Exit status: 0 written, 2 refused (a run directory that cannot be read, matplotlib missing, an output
format matplotlib cannot write).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from openrlhf_pilaf.analysis.plots import EXTRA_COLOURS, SAMPLER_COLOURS, make_figure, sampler_colours
from openrlhf_pilaf.analysis.runs import RunDirError, load_runs

__all__ = ["EXTRA_COLOURS", "INSTALL_HINT", "SAMPLER_COLOURS", "main", "make_figure", "make_parser", "sampler_colours"]

INSTALL_HINT = "pip install 'openrlhf-pilaf[plot]'"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_pilaf.cli.plot",
        description=" ".join(__doc__.split("\n\n")[1].split()),
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a run directory (--ckpt.output_dir)")
    parser.add_argument("--out", default="curves.png", help="image to write; the format follows its suffix (png)")
    parser.add_argument("--title", default=None, help="a title above both plots")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        curves = load_runs(args.run_dirs)
    except RunDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401  (only to find out whether it is there)
    except ImportError:
        print(f"error: the plot needs matplotlib: {INSTALL_HINT}", file=sys.stderr)
        return 2
    out = Path(args.out)
    fmt = out.suffix.lstrip(".").lower() or "png"
    fig = make_figure(curves, title=args.title)
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        print(
            f"error: --out {out}: matplotlib cannot write .{fmt}; use one of {', '.join(sorted(supported))}",
            file=sys.stderr,
        )
        return 2
    for curve in curves:  # a run that draws nothing on one side is said so, not left for the reader to miss
        for x, y, side in (("kl", "reward", "left"), ("pairs_labelled", "J", "right")):
            if not curve.has_finite(x, y):
                print(
                    f"warning: {curve.run_dir}: no evaluation has a finite {x} and {y}; nothing drawn {side}",
                    file=sys.stderr,
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, dpi=120)
    print(f"wrote {out} ({len(curves)} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
