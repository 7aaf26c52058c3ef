"""vLLM general-plugin entry point (see setup.py): registers our architectures in every vLLM process."""

from __future__ import annotations


def register() -> None:
    """Idempotent; uses lazy "module:Class" strings so vLLM imports the model only when it is used."""
    from vllm import ModelRegistry

    from openrlhf_pilaf.engines.vllm_interp.names import ARCHITECTURES

    supported = set(ModelRegistry.get_supported_archs())
    for arch, target in ARCHITECTURES.items():
        if arch not in supported:
            ModelRegistry.register_model(arch, target)
