"""Killed soup builds: the next build of the same output removes what they left, and only that."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from openrlhf_pilaf.soup import SoupConfig, build_soup
from openrlhf_pilaf.soup.staging import (
    WRITER_FILE,
    clear_stale,
    describe_process,
    directory_size,
    format_size,
    tmp_prefix,
    writer_state,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
BIG = 4 * 1024 * 1024  # elements of the synthetic ingredients' one tensor: 16 MB each


def _big_pair(root: Path) -> list[Path]:
    """Two "checkpoints" with one 16 MB tensor: small on disk, slow enough with tiny chunks to catch."""
    paths = []
    for seed in (0, 1):
        d = root / f"big-{seed}"
        d.mkdir()
        w = torch.randn(BIG, generator=torch.Generator().manual_seed(seed))
        save_file({"w": w}, str(d / "model.safetensors"), {"format": "pt"})
        (d / "config.json").write_text(json.dumps({"architectures": ["Synthetic"], "model_type": "synthetic"}))
        paths.append(d)
    return paths


def _wait_mid_write(out: Path, proc: subprocess.Popen, timeout: float = 180) -> Path:
    """The build directory of `proc` once its shard is partly written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for d in out.parent.glob(tmp_prefix(out) + "*"):
            shard = d / "model.safetensors"
            if shard.is_file() and 1024 < shard.stat().st_size < BIG * 4:
                return d
        if proc.poll() is not None:
            pytest.fail(f"the build ended before it could be caught mid-write: {proc.stderr.read()}")
        time.sleep(0.01)
    pytest.fail("the build never started writing")


def test_a_killed_build_is_removed_by_the_next_and_a_live_one_is_kept(tmp_path, caplog):
    a, b = _big_pair(tmp_path)
    out = tmp_path / "soup"
    cmd = [sys.executable, "-m", "openrlhf_pilaf.cli.build_soup", "--soup.ingredients", str(a), str(b)]
    cmd += ["--soup.output", str(out), "--soup.chunk_elems", "256", "--quiet"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    config = SoupConfig(ingredients=[str(a), str(b)], output=str(out))
    try:
        pending = _wait_mid_write(out, proc)
        os.kill(proc.pid, signal.SIGSTOP)  # a live build, frozen mid-write
        marker = json.loads((pending / WRITER_FILE).read_text())
        assert marker["pid"] == proc.pid and marker["output"] == str(out)

        # A concurrent build of the same output must not touch the live writer's directory.
        with caplog.at_level(logging.INFO, logger="openrlhf_pilaf.soup"):
            assert build_soup(config, progress=False) == out
        assert pending.is_dir()
        assert f"leaving the soup build {pending}" in caplog.text and "holds the build lock" in caplog.text
        assert WRITER_FILE not in os.listdir(out)  # the published soup carries no marker

        proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: its directory stays
        proc.wait(timeout=30)
        assert pending.is_dir() and (pending / "model.safetensors").stat().st_size > 1024
        assert writer_state(pending).verdict == "gone"
        size = format_size(directory_size(pending))

        caplog.clear()
        with caplog.at_level(logging.INFO, logger="openrlhf_pilaf.soup"):
            assert build_soup(config, progress=False) == out  # the soup is reused; the leftover is cleared
        assert not pending.exists()
        assert f"removed the stale soup build {pending} ({size}): its writer, pid {proc.pid} on" in caplog.text
        assert "reusing the soup" in caplog.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _fake_build(out: Path, name: str, marker: dict | None) -> Path:
    d = out.parent / f"{tmp_prefix(out)}{name}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"\0" * 2500)
    if marker is not None:
        (d / WRITER_FILE).write_text(json.dumps(marker))
    return d


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sizes_read_as_disk_tools_print_them():
    assert [format_size(n) for n in (0, 999, 2500, 15_700_000, 16 * 10**9, 3 * 10**12)] == [
        "0 B",
        "999 B",
        "2.5 kB",
        "15.7 MB",
        "16.0 GB",
        "3.0 TB",
    ]


@pytest.mark.parametrize(
    ("marker", "kept", "reason"),
    [
        (lambda: describe_process(), True, "is running"),  # this very process, no lock held
        (lambda: describe_process(_dead_pid()), False, "is no longer running"),
        (lambda: {**describe_process(), "start_ticks": -1}, False, "is no longer running"),  # a reused pid
        (lambda: {**describe_process(), "boot_id": "another-boot"}, False, "before this machine last booted"),
        (lambda: {**describe_process(), "host": "some-other-node"}, True, "cannot be checked from here"),
        (lambda: None, True, f"has no {WRITER_FILE}"),
        (lambda: {"pid": "?"}, True, "cannot be read"),
    ],
    ids=["live-pid", "dead-pid", "reused-pid", "rebooted", "other-host", "no-marker", "bad-marker"],
)
def test_marker_verdicts(tmp_path, caplog, marker, kept, reason):
    out = tmp_path / "soup"
    d = _fake_build(out, "x1", marker())
    other = _fake_build(tmp_path / "another-soup", "x2", describe_process(_dead_pid()))  # not this output's
    size = format_size(directory_size(d))
    with caplog.at_level(logging.INFO, logger="openrlhf_pilaf.soup"):
        removed = clear_stale(out)
    assert d.exists() == kept and removed == ([] if kept else [d])
    assert other.exists()
    assert reason in caplog.text and f"{d} ({size})" in caplog.text
