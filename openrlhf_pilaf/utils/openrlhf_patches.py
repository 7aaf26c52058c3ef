"""Apply our small, upstreamable source patches to an installed OpenRLHF, and check them at start-up.

Why source patches and not monkeypatches: OpenRLHF's Ray actors and vLLM's worker processes
import OpenRLHF afresh in other processes, where a monkeypatch made in the driver never arrives.
Each patch is a unified diff against exactly one OpenRLHF release; applying checks that release
and refuses any other, so a silent half-applied tree cannot happen. Applying twice is a no-op.

Policy (README "Install"): `SUPPORTED_OPENRLHF` is the one OpenRLHF release the patches and our
OpenRLHF-facing code are tested against, and setup.py pins exactly it. The patches exist for the
CPU stack (no CUDA): there every one must be applied. A GPU install needs none of them.

Everything here is cheap (no OpenRLHF, torch, Ray or vLLM import), so launchers can call
`require_supported_openrlhf()` / `require_patches()` first thing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from openrlhf_pilaf import SUPPORTED_OPENRLHF

logger = logging.getLogger(__name__)

# The command a user runs to fix a missing patch (a console script of this package).
PATCH_COMMAND = "openrlhf-pilaf-patch"
PATCH_MODULE_COMMAND = "python -m openrlhf_pilaf.cli.apply_patches"


def packaged_patch_dir() -> Path:
    """The patches shipped inside the package (`openrlhf_pilaf/patches`, package data).

    In a checkout it is a symlink to the repository's top-level `patches/` (the one source); in a
    wheel, setuptools copied the files. pip installs packages unzipped, so it is a real directory.
    """
    return Path(str(importlib.resources.files("openrlhf_pilaf").joinpath("patches")))


DEFAULT_PATCH_DIR = packaged_patch_dir()


class PatchError(RuntimeError):
    """A patch cannot be applied or is missing: wrong OpenRLHF version, foreign edits, no patch tool."""


class UnsupportedOpenRLHFError(PatchError):
    """The installed OpenRLHF is not the release this openrlhf-pilaf is made for (or is absent)."""


@dataclass(frozen=True)
class PatchOutcome:
    name: str
    state: str  # "applied" (now), "already-applied", "reverted", "not-applied"


def openrlhf_site_dir() -> Path:
    """The directory that contains the `openrlhf` package, found without importing it."""
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or spec.origin is None:
        raise UnsupportedOpenRLHFError(
            f"openrlhf is not installed in this environment; install openrlhf=={SUPPORTED_OPENRLHF}"
        )
    return Path(spec.origin).resolve().parent.parent


def installed_openrlhf_version() -> str:
    try:
        return importlib.metadata.version("openrlhf")
    except importlib.metadata.PackageNotFoundError as e:
        raise UnsupportedOpenRLHFError(
            f"openrlhf is not installed in this environment; install openrlhf=={SUPPORTED_OPENRLHF} "
            f"(on a GPU cluster: pip install 'openrlhf[vllm]=={SUPPORTED_OPENRLHF}')"
        ) from e


def require_supported_openrlhf(version: str | None = None) -> str:
    """Raise `UnsupportedOpenRLHFError` unless the installed openrlhf is `SUPPORTED_OPENRLHF`; return it.

    `version` overrides the installed version (tests). Reads package metadata only: no import.
    """
    version = installed_openrlhf_version() if version is None else version
    if version != SUPPORTED_OPENRLHF:
        raise UnsupportedOpenRLHFError(
            f"openrlhf-pilaf supports openrlhf=={SUPPORTED_OPENRLHF} (its patches and OpenRLHF-facing code are "
            f"tested against exactly that release), but openrlhf=={version} is installed; install "
            f"openrlhf=={SUPPORTED_OPENRLHF} or an openrlhf-pilaf release made for {version}"
        )
    return version


def patches_required(cpu_stack: bool) -> bool:
    """Whether this machine needs our OpenRLHF patches: all of them on the CPU stack, none on GPU."""
    return cpu_stack


def require_patches(cpu_stack: bool, *, site_dir: Path | None = None, patch_dir: Path = DEFAULT_PATCH_DIR) -> None:
    """Start-up check for launchers: the supported OpenRLHF, and on the CPU stack every patch applied.

    Raises `PatchError` naming the command to run, so a missing patch is refused on the driver
    instead of failing deep inside a Ray actor. On a GPU install only the version is checked.
    `site_dir` (default: where `openrlhf` is installed) holds the `openrlhf` package to check.
    """
    require_supported_openrlhf()
    if not patches_required(cpu_stack):
        return
    site_dir = openrlhf_site_dir() if site_dir is None else Path(site_dir)
    missing = [p.name for p in patch_files(patch_dir) if patch_state(p, site_dir) != "applied"]
    if missing:
        raise PatchError(
            f"the CPU stack needs every openrlhf-pilaf patch applied to openrlhf under {site_dir}, but "
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not; run `{PATCH_COMMAND}` "
            f"(or `{PATCH_MODULE_COMMAND}`), or `make install` in a checkout"
        )


def check_install() -> None:
    """The supported OpenRLHF, and on a machine without CUDA (the CPU stack) our patches, before anything loads.

    What every command that loads OpenRLHF's models checks first. The one function here that imports torch (to
    ask for CUDA)."""
    import torch

    require_supported_openrlhf()
    require_patches(cpu_stack=not torch.cuda.is_available())


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


def patch_state(patch: Path, site_dir: Path) -> str:
    """'applied', 'not-applied', or raises if the tree matches neither side of the diff."""
    if _run_patch(patch, site_dir, reverse=True, dry_run=True):
        return "applied"
    if _run_patch(patch, site_dir, reverse=False, dry_run=True):
        return "not-applied"
    raise PatchError(
        f"{patch.name} matches neither the pristine nor the patched openrlhf sources under {site_dir}: "
        f"the installed files were edited by something else; reinstall openrlhf=={SUPPORTED_OPENRLHF} and apply again"
    )


def _bring_to(state: str, site_dir: Path | None, patch_dir: Path, version: str | None) -> list[PatchOutcome]:
    """Move every patch to `state` ('applied' or 'not-applied'); check all before changing any."""
    require_supported_openrlhf(version)
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
    """Undo our patches (newest first), restoring the pristine release's sources."""
    return _bring_to("not-applied", site_dir, patch_dir, version)
