"""Sampling primitives shared by every sampler of the project.

    from openrlhf_pilaf.ops import interpolated_sample
    out = interpolated_sample(policy_logits, ref_logits, w=0.1, top_p=0.9)  # PILAF's pi_plus, beta = 0.1
    out.token_ids, out.policy_logprob, out.ref_logprob, out.sampled_logprob

Triton is imported only when the fused kernel is used, so this package imports without it.
"""

from openrlhf_pilaf.ops.interpolated_sampling import (
    InterpolatedSample,
    interpolated_sample,
    resolve_backend,
    triton_available,
)
from openrlhf_pilaf.ops.sampling_exact import exact_distribution
from openrlhf_pilaf.ops.validation import RowStatus

__all__ = [
    "InterpolatedSample",
    "RowStatus",
    "exact_distribution",
    "interpolated_sample",
    "resolve_backend",
    "triton_available",
]
