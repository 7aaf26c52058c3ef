"""utils.cpu_stack: the CPU stack's environment, set only where unset (testing.cpu_env re-exports it)."""

from __future__ import annotations

import os
from pathlib import Path

from openrlhf_pilaf.utils import cpu_stack


def test_testing_cpu_env_is_the_same_functions():
    from openrlhf_pilaf.testing import cpu_env

    assert cpu_env.configure_cpu_stack is cpu_stack.configure_cpu_stack
    assert cpu_env.single_process_dist_env is cpu_stack.single_process_dist_env
    assert cpu_env.free_port is cpu_stack.free_port


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cpu_stack.CACHE_DIR_ENV, str(tmp_path))
    assert cpu_stack.default_cache_dir() == str(tmp_path)
    monkeypatch.delenv(cpu_stack.CACHE_DIR_ENV)
    assert cpu_stack.default_cache_dir() == os.path.expanduser("~/.cache/openrlhf_pilaf")


def test_configure_sets_only_what_is_unset(monkeypatch, tmp_path):
    keys = ["TORCH_EXTENSIONS_DIR", "VLLM_CACHE_ROOT", "VLLM_RPC_BASE_PATH", "TORCHINDUCTOR_CACHE_DIR"]
    for key in [*keys, "TRITON_CACHE_DIR", "VLLM_CPU_KVCACHE_SPACE"]:
        monkeypatch.setenv(key, "recorded")  # so that teardown restores the variable, set or not
        monkeypatch.delenv(key)
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/else")
    got = cpu_stack.configure_cpu_stack(tmp_path, kv_cache_gib=2)
    assert got["TRITON_CACHE_DIR"] == "/somewhere/else"
    assert got["VLLM_CPU_KVCACHE_SPACE"] == "2"
    for key in keys:
        assert Path(got[key]).parent == tmp_path.resolve() and Path(got[key]).is_dir()


def test_world_of_one():
    env = cpu_stack.single_process_dist_env()
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("0", "1", "-1")
    assert 0 < int(env["MASTER_PORT"]) < 65536
