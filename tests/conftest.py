"""Shared fixtures. Tiny models and library caches live under .cache/ (or $PILAF_TEST_CACHE)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from openrlhf_pilaf.testing.cpu_env import configure_cpu_stack

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_ROOT = Path(os.environ.get("PILAF_TEST_CACHE", REPO_ROOT / ".cache"))

# Before any test imports torch extensions, vLLM or Ray.
configure_cpu_stack(CACHE_ROOT)


@pytest.fixture(scope="session")
def cache_root() -> Path:
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    return CACHE_ROOT


@pytest.fixture(scope="session")
def tiny_suite(cache_root):
    """Policy, reference, reward model and an alternative policy: tiny random Llamas, fp32."""
    from openrlhf_pilaf.testing import build_tiny_suite

    return build_tiny_suite(cache_root / "models")


@pytest.fixture(scope="module")
def ray_cluster(cache_root):
    """A local Ray cluster per test module, torn down after it."""
    import ray

    # Logical CPUs: engine placement bundles and actors must fit on a 2-core machine.
    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, _temp_dir=str(cache_root / "ray"), log_to_driver=False)
    yield ray
    ray.shutdown()
