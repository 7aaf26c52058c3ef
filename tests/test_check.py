"""`openrlhf_pilaf.cli.check`: the environment report says ready on this (patched CPU) stack, fails
each unpatched row with the command to run (and passes it where no patch is needed), and exits 2
when it cannot check at all. The wheel test runs the console script in a throwaway environment."""

from __future__ import annotations

import shutil

import pytest

from openrlhf_pilaf.cli import check
from openrlhf_pilaf.utils.openrlhf_patches import openrlhf_site_dir, patch_files, revert_patches

pytestmark = pytest.mark.openrlhf


def test_this_machine_is_ready(capsys):
    assert check.main([]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines() if line}
    for item in ("python", "torch", "CUDA", "vllm", "ray", "deepspeed", "transformers", "vLLM plugin", "triton"):
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
