"""Fingerprints of a model's weights, to show that a weight sync left the reference half bit-identical.

On vLLM's CPU backend a linear layer's weight parameter is emptied after loading and the repacked
weight lives only inside the layer's `cpu_linear` closure, where it cannot be read back. So a
fingerprint has two parts: a SHA-256 over every parameter and buffer (name, dtype, shape, bytes), and
the identity of each layer's packing closure (an in-place reload replaces the closures of the layers it
touched). Equal fingerprints before and after a sync mean the same bytes and the same packed kernels.
"""

from __future__ import annotations

import hashlib
import itertools

from torch import nn

from openrlhf_pilaf.utils.tensor_hash import tensors_sha256


def module_fingerprint(module: nn.Module) -> dict[str, str | int]:
    tensors, count = tensors_sha256(itertools.chain(module.named_parameters(), module.named_buffers()))
    kernels = hashlib.sha256()
    for name, sub in module.named_modules():
        packed = sub.__dict__.get("cpu_linear")
        if packed is not None:
            kernels.update(f"{name}|{id(packed)}|".encode())
    return {"tensors_sha256": tensors, "num_tensors": count, "cpu_kernels_sha256": kernels.hexdigest()}


def model_fingerprints(model: nn.Module) -> dict[str, dict[str, str | int]]:
    """Per half for the interpolated model (`pilaf_halves()`), else {"model": ...}."""
    halves = model.pilaf_halves() if hasattr(model, "pilaf_halves") else {"model": model}
    return {name: module_fingerprint(sub) for name, sub in halves.items()}
