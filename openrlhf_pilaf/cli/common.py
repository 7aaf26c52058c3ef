"""What every launcher does the same way: OpenRLHF-style log lines, and which errors are the user's to fix."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(message)s"
LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(format=LOG_FORMAT, level=level, datefmt=LOG_DATEFMT)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors a user fixes by changing a flag or a file: a launcher prints `error: ...` and exits 2.

    Imported when called, not at module import, so that `--help` stays fast.
    """
    from openrlhf_pilaf.engines.rules import IncompatibleReferenceError
    from openrlhf_pilaf.utils.openrlhf_patches import PatchError

    return (ValueError, PatchError, IncompatibleReferenceError, FileNotFoundError)
