"""`python -m openrlhf_pilaf.cli.build_soup --soup.ingredients A B [--soup.weights 0.5 0.5] --soup.output SOUP`

Build a SALSA model soup (the weighted element-wise average of fine-tuned checkpoints of one base
model) or reuse an identical one already at the output. Prints the soup's directory on stdout.
Exit status: 0 built or reused, 2 refused (bad flags, incompatible ingredients, occupied output,
NaN/inf in the average), 130 interrupted (nothing is left behind).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from openrlhf_pilaf.soup.config import SoupConfig
from openrlhf_pilaf.utils.config_cli import add_dataclass_arguments, dataclass_from_namespace


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m openrlhf_pilaf.cli.build_soup",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
    )
    add_dataclass_arguments(parser, SoupConfig)
    parser.add_argument("--quiet", action="store_true", help="log warnings only and show no progress bar")
    return parser


def _sigterm_as_interrupt(signum, frame):
    # A job scheduler's SIGTERM then unwinds like Ctrl-C, so the temporary directory is removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        config = dataclass_from_namespace(SoupConfig, args)
    except ValueError as e:
        parser.error(str(e))

    from openrlhf_pilaf.soup.builder import build_soup  # imports torch: only once the flags are valid
    from openrlhf_pilaf.soup.errors import SoupError

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    try:
        path = build_soup(config, progress=False if args.quiet else None)
    except SoupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no soup was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
