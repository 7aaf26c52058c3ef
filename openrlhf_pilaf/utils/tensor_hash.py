"""One SHA-256 over named tensors (name, dtype, shape, raw bytes): to show that two sets of weights are the
same bytes, e.g. a learner after a checkpoint load, or an engine half after a weight sync."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def tensors_sha256(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, int]:
    """(hex digest, number of tensors) over `named` in the order given."""
    h = hashlib.sha256()
    count = 0
    for name, t in named:
        data = t.detach().contiguous().reshape(-1).view(torch.uint8).cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(data.numpy().tobytes())
        count += 1
    return h.hexdigest(), count
