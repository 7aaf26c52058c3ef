"""The CPU stack's commands print no import-time warnings a user would have to ignore (issue 9:
the deprecated `pynvml` shim made every `import torch` print a FutureWarning)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [["-c", "import torch, openrlhf_pilaf"], ["-m", "openrlhf_pilaf.cli.apply_patches", "--help"]],
    ids=["import", "cli-help"],
)
def test_no_pynvml_future_warning(args):
    # -W default: show every warning once, whatever the caller's filters, so a hidden one fails too
    out = subprocess.run([sys.executable, "-W", "default", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pynvml" not in out.stderr, out.stderr
    assert "FutureWarning" not in out.stderr, out.stderr
