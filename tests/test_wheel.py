"""The package as a cluster user gets it: build the wheel, install it (`--no-deps`) into a throwaway
venv that sees the CPU stack, and from a directory outside the checkout run its console scripts.

The throwaway venv reaches the CPU stack through a .pth line naming this venv's site-packages, which
Python puts AFTER the throwaway's own site-packages: the wheel's `openrlhf_pilaf` wins over the
editable install, and a copy of the (patched) `openrlhf` package with its dist-info, put into the
throwaway venv, wins over this venv's, so `--revert` and a wrong version never touch `.venv`.
Builds offline (`--no-build-isolation --no-index`): setuptools and wheel come from this venv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from openrlhf_pilaf import SUPPORTED_OPENRLHF
from openrlhf_pilaf.utils.openrlhf_patches import openrlhf_site_dir

pytestmark = [pytest.mark.wheel, pytest.mark.openrlhf]

REPO_ROOT = Path(__file__).resolve().parents[1]
# What setup.py reads; copied so the build writes build/ and *.egg-info outside the checkout.
BUILD_INPUTS = ["setup.py", "README.md", "MANIFEST.in", "openrlhf_pilaf", "patches"]


@dataclass(frozen=True)
class WheelEnv:
    wheel: Path
    venv: Path
    site: Path  # the throwaway venv's own site-packages
    cwd: Path  # outside the checkout

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A command of the throwaway venv (`python` or a console script), run as a user would."""
        exe = self.venv / "bin" / args[0]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            [str(exe), *args[1:]], cwd=self.cwd, env=env, capture_output=True, text=True, timeout=timeout
        )


def _pip(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> WheelEnv:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        elif path.exists():
            shutil.copy2(path, src / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"), str(src), cwd=root)
    (wheel,) = (root / "dist").glob("openrlhf_pilaf-*.whl")

    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Installed before the CPU stack is visible, so pip sees an empty environment.
    _pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel), cwd=root)

    installed = openrlhf_site_dir()
    shutil.copytree(installed / "openrlhf", site / "openrlhf", ignore=shutil.ignore_patterns("__pycache__"))
    (dist_info,) = installed.glob("openrlhf-*.dist-info")
    shutil.copytree(dist_info, site / dist_info.name)
    (site / "zz_pilaf_cpu_stack.pth").write_text(sysconfig.get_path("purelib") + "\n")

    cwd = root / "elsewhere"
    cwd.mkdir()
    return WheelEnv(wheel=wheel, venv=venv, site=site, cwd=cwd)


def test_wheel_contains_every_patch_as_package_data(wheel_env):
    with zipfile.ZipFile(wheel_env.wheel) as whl:
        shipped = {Path(n).name: whl.read(n) for n in whl.namelist() if n.startswith("openrlhf_pilaf/patches/")}
        entry_points = next(whl.read(n).decode() for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))
        metadata = next(whl.read(n).decode() for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    source = {p.name: p.read_bytes() for p in (REPO_ROOT / "patches").glob("*.patch")}
    assert source and shipped == source
    assert "openrlhf-pilaf-check = openrlhf_pilaf.cli.check:main" in entry_points
    assert "[vllm.general_plugins]" in entry_points
    assert f"Requires-Dist: openrlhf=={SUPPORTED_OPENRLHF}\n" in metadata


def test_wheel_ships_every_source_module(wheel_env):
    """A folder without __init__.py is skipped by find_packages: the editable install works, the wheel not."""
    package = REPO_ROOT / "openrlhf_pilaf"
    sources = {
        p.relative_to(REPO_ROOT).as_posix()
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts and "patches" not in p.relative_to(package).parts[:1]
    }
    with zipfile.ZipFile(wheel_env.wheel) as whl:
        shipped = {n for n in whl.namelist() if n.endswith(".py")}
    assert sources and sources <= shipped, sorted(sources - shipped)


def test_installed_wheel_wins_and_finds_its_patches(wheel_env):
    code = (
        "import openrlhf, openrlhf_pilaf; from openrlhf_pilaf.utils.openrlhf_patches import DEFAULT_PATCH_DIR, "
        "patch_files; print(openrlhf_pilaf.__file__); print(openrlhf.__file__); print(DEFAULT_PATCH_DIR); "
        "print(len(patch_files()))"
    )
    out = wheel_env.run("python", "-c", code)
    assert out.returncode == 0, out.stderr
    pilaf_file, openrlhf_file, patch_dir, count = out.stdout.split()
    for path in (pilaf_file, openrlhf_file, patch_dir):
        assert Path(path).is_relative_to(wheel_env.site), out.stdout
    assert not Path(patch_dir).is_symlink()
    assert int(count) == len(list((REPO_ROOT / "patches").glob("*.patch")))


def test_vllm_plugin_entry_point_loads_and_registers(wheel_env):
    code = (
        "from importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='vllm.general_plugins') if e.name == 'openrlhf_pilaf']\n"
        "register = ep.load()\n"
        "import sys; print(sys.modules[register.__module__].__file__)\n"
        "register(); register()  # idempotent\n"
        "from vllm import ModelRegistry\n"
        "from openrlhf_pilaf.engines.vllm_interp.names import ARCHITECTURES\n"
        "print(sorted(set(ARCHITECTURES) - set(ModelRegistry.get_supported_archs())))\n"
    )
    out = wheel_env.run("python", "-c", code, timeout=180)
    assert out.returncode == 0, out.stderr
    plugin_file, missing = out.stdout.strip().splitlines()[-2:]
    assert Path(plugin_file).is_relative_to(wheel_env.site)
    assert missing == "[]"


def test_patch_cli_exit_codes_revert_and_version_refusal(wheel_env):
    check = wheel_env.run("openrlhf-pilaf-patch", "--check")
    assert check.returncode == 0, check.stdout + check.stderr  # the copied openrlhf is patched

    reverted = wheel_env.run("openrlhf-pilaf-patch", "--revert")
    assert reverted.returncode == 0, reverted.stderr
    n = len(list((REPO_ROOT / "patches").glob("*.patch")))
    assert reverted.stdout.count("reverted") == n
    ring = (wheel_env.site / "openrlhf/models/ring_attn_utils.py").read_text()
    assert ring.splitlines()[2].startswith("from flash_attn"), "pristine openrlhf imports flash_attn at module level"
    check = wheel_env.run("openrlhf-pilaf-patch", "--check")
    assert check.returncode == 1 and check.stdout.count("not-applied") == n, check.stdout + check.stderr

    # the environment report, from the wheel: unpatched CPU stack -> exit 1, every patch row says what to run
    report = wheel_env.run("openrlhf-pilaf-check", timeout=180)
    assert report.returncode == 1, report.stdout + report.stderr
    assert len(re.findall(r"not-applied; needed here.*FAIL +fix: openrlhf-pilaf-patch", report.stdout)) == n, (
        report.stdout
    )
    plugin_row = next(line for line in report.stdout.splitlines() if line.startswith("vLLM plugin"))
    assert "registered" in plugin_row and plugin_row.rstrip().endswith("ok"), report.stdout

    applied = wheel_env.run("openrlhf-pilaf-patch")
    assert applied.returncode == 0 and applied.stdout.count("applied") == n, applied.stderr
    again = wheel_env.run("openrlhf-pilaf-patch")
    assert again.returncode == 0 and again.stdout.count("already-applied") == n, again.stderr
    check = wheel_env.run("openrlhf-pilaf-patch", "--check")
    assert check.returncode == 0, check.stdout + check.stderr

    (metadata,) = wheel_env.site.glob("openrlhf-*.dist-info/METADATA")
    pristine = metadata.read_text()
    metadata.write_text(pristine.replace(f"\nVersion: {SUPPORTED_OPENRLHF}\n", "\nVersion: 0.11.3\n", 1))
    try:
        for args in ((), ("--check",), ("--revert",)):
            out = wheel_env.run("openrlhf-pilaf-patch", *args)
            assert out.returncode == 2, (args, out.stdout, out.stderr)
            assert f"openrlhf=={SUPPORTED_OPENRLHF}" in out.stderr and "openrlhf==0.11.3" in out.stderr, out.stderr
    finally:
        metadata.write_text(pristine)
    assert wheel_env.run("openrlhf-pilaf-patch", "--check").returncode == 0, "a refused run changes nothing"
