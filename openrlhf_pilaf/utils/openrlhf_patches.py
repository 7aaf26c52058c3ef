"""Apply our small, upstreamable source patches to an installed OpenRLHF.

Why source patches and not monkeypatches: OpenRLHF's Ray actors and vLLM's worker processes
import OpenRLHF afresh in other processes, where a monkeypatch made in the driver never arrives.
Each patch is a unified diff against exactly one OpenRLHF release; applying checks that release
and refuses any other, so a silent half-applied tree cannot happen. Applying twice is a no-op.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf import SUPPORTED_OPENRLHF

logger = logging.getLogger(__name__)

# patches/ sits at the repository root, next to the package (design card layout).
DEFAULT_PATCH_DIR = Path(__file__).resolve().parents[2] / "patches"


class PatchError(RuntimeError):
    """A patch cannot be applied: wrong OpenRLHF version, foreign edits, or no patch tool."""


@dataclass(frozen=True)
class PatchOutcome:
    name: str
    state: str  # "applied" (now), "already-applied", "reverted", "not-applied"


def openrlhf_site_dir() -> Path:
    """The directory that contains the `openrlhf` package, found without importing it."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or spec.origin is None:
        raise PatchError("openrlhf is not installed in this environment (pip install --no-deps openrlhf==0.11.2)")
    return Path(spec.origin).resolve().parent.parent


def installed_openrlhf_version() -> str:
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError as e:
        raise PatchError("openrlhf is not installed in this environment") from e


def patch_files(patch_dir: Path = DEFAULT_PATCH_DIR) -> list[Path]:
    files = sorted(Path(patch_dir).glob("*.patch"))
    if not files:
        raise PatchError(f"no *.patch files in {patch_dir}")
    return files


def _patch_tool() -> str:
    tool = shutil.which("patch")
    if tool is None:
        raise PatchError("the `patch` program is needed to apply source patches (Debian: apt-get install patch)")
    return tool


def _run_patch(patch: Path, site_dir: Path, *, reverse: bool, dry_run: bool) -> bool:
    # --force: never guess that a patch is reversed (--batch would silently flip -R); --fuzz=0: a hunk
    # applies only where its context matches exactly, so a foreign edit is reported, not merged.
    cmd = [_patch_tool(), "-p1", "--force", "--fuzz=0", "--silent", "-d", str(site_dir), "-i", str(patch)]
    if reverse:
        cmd.append("--reverse")
    if dry_run:
        cmd.append("--dry-run")
    else:
        cmd.append("--no-backup-if-mismatch")
    return subprocess.run(cmd, capture_output=True, text=True).returncode == 0


def _check_version(version: str | None) -> None:
    version = installed_openrlhf_version() if version is None else version
    if version != SUPPORTED_OPENRLHF:
        raise PatchError(
            f"these patches are for openrlhf=={SUPPORTED_OPENRLHF}, but openrlhf=={version} is installed; "
            f"install openrlhf=={SUPPORTED_OPENRLHF} or an openrlhf-pilaf release made for {version}"
        )


def patch_state(patch: Path, site_dir: Path) -> str:
    """'applied', 'not-applied', or raises if the tree matches neither side of the diff."""
    if _run_patch(patch, site_dir, reverse=True, dry_run=True):
        return "applied"
    if _run_patch(patch, site_dir, reverse=False, dry_run=True):
        return "not-applied"
    raise PatchError(
        f"{patch.name} matches neither the pristine nor the patched openrlhf sources under {site_dir}: "
        "the installed files were edited by something else; reinstall openrlhf==0.11.2 and apply again"
    )


def _bring_to(state: str, site_dir: Path | None, patch_dir: Path, version: str | None) -> list[PatchOutcome]:
    """Move every patch to `state` ('applied' or 'not-applied'); check all before changing any."""
    _check_version(version)
    site_dir = openrlhf_site_dir() if site_dir is None else Path(site_dir)
    patches = patch_files(patch_dir)
    states = {p: patch_state(p, site_dir) for p in patches}
    reverse = state == "not-applied"
    done, verb = ("not-applied", "reverted") if reverse else ("already-applied", "applied")
    outcomes = []
    for p in reversed(patches) if reverse else patches:  # revert newest first
        if states[p] == state:
            outcomes.append(PatchOutcome(p.name, done))
            continue
        if not _run_patch(p, site_dir, reverse=reverse, dry_run=False):
            raise PatchError(f"{'reverting' if reverse else 'applying'} {p.name} failed under {site_dir}")
        outcomes.append(PatchOutcome(p.name, verb))
    return outcomes


def apply_patches(
    site_dir: Path | None = None, patch_dir: Path = DEFAULT_PATCH_DIR, version: str | None = None
) -> list[PatchOutcome]:
    """Apply every patch that is not applied yet; check all of them before changing anything."""
    return _bring_to("applied", site_dir, patch_dir, version)


def revert_patches(
    site_dir: Path | None = None, patch_dir: Path = DEFAULT_PATCH_DIR, version: str | None = None
) -> list[PatchOutcome]:
    """Undo our patches (newest first), restoring the pristine 0.11.2 sources."""
    return _bring_to("not-applied", site_dir, patch_dir, version)
