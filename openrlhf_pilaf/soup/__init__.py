"""SALSA model soups: the element-wise weighted average of K fine-tuned checkpoints of one base model,
used as the KL reference in place of the initial policy (Chegini et al., arXiv 2411.01798).

    from openrlhf_pilaf.soup import SoupConfig, build_soup
    path = build_soup(SoupConfig(ingredients=["sft-a", "sft-b"], output="soup"))  # idempotent

Names are imported on first use, so that reading `SoupConfig` (e.g. to generate a launcher's
flags) does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SoupConfig": "openrlhf_pilaf.soup.config",
    "SoupError": "openrlhf_pilaf.soup.errors",
    "build_soup": "openrlhf_pilaf.soup.builder",
    "read_record": "openrlhf_pilaf.soup.record",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
