"""Our source patches against the pinned OpenRLHF: they ship inside the package, apply, re-apply as a
no-op, revert to the pristine release, notice foreign edits, and refuse any other OpenRLHF version;
the start-up checks the launchers call refuse an unpatched CPU stack with the command to run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import openrlhf_pilaf
from openrlhf_pilaf.utils.openrlhf_patches import (
    DEFAULT_PATCH_DIR,
    PatchError,
    UnsupportedOpenRLHFError,
    apply_patches,
    installed_openrlhf_version,
    openrlhf_site_dir,
    patch_files,
    patch_state,
    require_patches,
    require_supported_openrlhf,
    revert_patches,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.openrlhf


def _snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.py"))}


@pytest.fixture()
def openrlhf_copy(tmp_path):
    """A copy of the installed (patched by `make install`) OpenRLHF sources to work on."""
    shutil.copytree(
        openrlhf_site_dir() / "openrlhf", tmp_path / "openrlhf", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_installed_openrlhf_is_the_pinned_release_and_fully_patched():
    assert installed_openrlhf_version() == "0.11.2"
    out = subprocess.run(
        [sys.executable, "-m", "openrlhf_pilaf.cli.apply_patches", "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("applied") == len(patch_files())


def test_apply_is_idempotent_and_revert_restores_pristine(openrlhf_copy):
    patched = _snapshot(openrlhf_copy)
    again = apply_patches(openrlhf_copy, version="0.11.2")
    assert [o.state for o in again] == ["already-applied"] * len(patch_files())
    assert _snapshot(openrlhf_copy) == patched

    reverted = revert_patches(openrlhf_copy, version="0.11.2")
    assert {o.state for o in reverted} == {"reverted"}
    ring = (openrlhf_copy / "openrlhf/models/ring_attn_utils.py").read_text()
    assert ring.splitlines()[2].startswith("from flash_attn"), "pristine 0.11.2 imports flash_attn at module level"
    assert all(patch_state(p, openrlhf_copy) == "not-applied" for p in patch_files())

    applied = apply_patches(openrlhf_copy, version="0.11.2")
    assert {o.state for o in applied} == {"applied"}
    assert _snapshot(openrlhf_copy) == patched


def test_refuses_another_openrlhf_version(openrlhf_copy):
    before = _snapshot(openrlhf_copy)
    for version in ("0.11.1", "0.11.3", "0.12.0"):
        with pytest.raises(PatchError, match=r"openrlhf==0\.11\.2"):
            apply_patches(openrlhf_copy, version=version)
    assert _snapshot(openrlhf_copy) == before


def test_foreign_edit_is_reported_not_merged(openrlhf_copy):
    revert_patches(openrlhf_copy, version="0.11.2")
    target = openrlhf_copy / "openrlhf/utils/distributed_util.py"
    target.write_text(target.read_text().replace("torch.cuda.synchronize()", "torch.cuda.synchronize()  # local"))
    before = _snapshot(openrlhf_copy)
    with pytest.raises(PatchError, match="edited by something else"):
        apply_patches(openrlhf_copy, version="0.11.2")
    assert _snapshot(openrlhf_copy) == before, "nothing is changed when any patch cannot apply"


def test_patches_are_package_data_with_one_source():
    assert Path(openrlhf_pilaf.__file__).parent / "patches" == DEFAULT_PATCH_DIR
    names = [p.name for p in patch_files()]
    assert names == sorted(p.name for p in (REPO_ROOT / "patches").glob("*.patch"))
    # in a checkout the package's copy is the top-level patches/ itself, not a second copy
    assert DEFAULT_PATCH_DIR.is_symlink()
    assert DEFAULT_PATCH_DIR.resolve() == (REPO_ROOT / "patches").resolve()


def test_require_supported_openrlhf_names_both_versions():
    assert require_supported_openrlhf() == openrlhf_pilaf.SUPPORTED_OPENRLHF == "0.11.2"
    with pytest.raises(UnsupportedOpenRLHFError, match=r"supports openrlhf==0\.11\.2.*openrlhf==0\.12\.0 is installed"):
        require_supported_openrlhf("0.12.0")
    assert issubclass(UnsupportedOpenRLHFError, PatchError)


def test_require_patches_refuses_unpatched_cpu_stack_with_the_command(openrlhf_copy):
    require_patches(cpu_stack=True, site_dir=openrlhf_copy)  # the copy is patched
    revert_patches(openrlhf_copy, version="0.11.2")
    with pytest.raises(PatchError, match="openrlhf-pilaf-patch") as err:
        require_patches(cpu_stack=True, site_dir=openrlhf_copy)
    assert all(p.name in str(err.value) for p in patch_files())
    require_patches(cpu_stack=False, site_dir=openrlhf_copy)  # a GPU install needs no patch


def test_require_patches_is_cheap():
    code = (
        "import sys; from openrlhf_pilaf.utils.openrlhf_patches import require_patches; require_patches(True); "
        "print(sorted(m for m in ('torch', 'ray', 'vllm', 'deepspeed', 'openrlhf') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
