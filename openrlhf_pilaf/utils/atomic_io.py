"""One way to replace a file so that a crash (or a reader opening it early) sees the old file or the whole new one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write to a temporary file beside `path`, fsync it, rename it over `path`, then fsync the directory
    (so the rename itself survives a power cut). The temporary file never outlives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """`obj` as JSON (NaN and inf refused: they are not JSON), atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
