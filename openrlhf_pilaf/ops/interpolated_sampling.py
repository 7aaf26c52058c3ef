"""`interpolated_sample`: one decoding step from logits(w) = (1 + w) * h_policy - w * h_ref.

The single sampling primitive of the project: w = 0 samples the policy, w = -1 the reference,
w = +beta / -beta PILAF's pi_plus / pi_minus (the maths and the order of interpolation, temperature,
top-k and top-p: docs/interpolation.md). This module is the public
dispatcher; the two backends are `sampling_torch` (reference semantics, any device) and
`sampling_triton` (fused CUDA kernel, imported only when used).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch

from openrlhf_pilaf.ops.sampling_torch import sample_torch
from openrlhf_pilaf.ops.validation import BackendOutput, SamplingInputs, check_inputs, raise_for_status

Backend = Literal["auto", "torch", "triton"]
BACKENDS = ("auto", "torch", "triton")


@dataclass(frozen=True)
class InterpolatedSample:
    """One token per row and its log-probabilities (all [B], on the logits' device).

    policy_logprob / ref_logprob are under the models' own distributions (temperature 1, no
    top-k / top-p), which is what DPO's implicit reward beta * log(pi / pi_ref) needs;
    sampled_logprob is under the distribution the token was actually drawn from.
    """

    token_ids: torch.Tensor  # int64
    policy_logprob: torch.Tensor  # float32: log softmax(h_policy)[token]
    ref_logprob: torch.Tensor | None  # float32: log softmax(h_ref)[token]; None without ref_logits
    sampled_logprob: torch.Tensor  # float32: log of the token's probability in the sampled distribution


def triton_available() -> bool:
    """True if the Triton backend can be imported (it needs the `triton` package)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, device: torch.device) -> Literal["torch", "triton"]:
    """`auto`: the fused kernel for CUDA tensors when Triton imports, else plain PyTorch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not triton_available():
            raise ValueError("backend='triton' needs the triton package (pip install openrlhf-pilaf[triton])")
        if device.type != "cuda" and not _interpreting():
            raise ValueError(
                f"backend='triton' needs CUDA tensors, got {device} "
                "(CPU tensors run only under Triton's interpreter, TRITON_INTERPRET=1, for tests)"
            )
        return "triton"
    return "triton" if device.type == "cuda" and triton_available() else "torch"


def interpolated_sample(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    w: float | torch.Tensor,
    *,
    temperature: float | torch.Tensor = 1.0,
    top_p: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    generator: torch.Generator | None = None,
    uniform: torch.Tensor | None = None,
    vocab_size: int | None = None,
    backend: Backend = "auto",
) -> InterpolatedSample:
    """Draw one token per row from softmax(((1 + w) * h_policy - w * h_ref) / T), after top-k / top-p.

    Args:
        policy_logits: [B, Vp] float32 / bfloat16 / float16 next-token logits of the policy.
        ref_logits: [B, Vr] logits of the reference, same dtype and device; may be None when every
            w is 0 (then `ref_logprob` is None). Rows with w == 0 never use it for sampling, so it
            may hold anything there (NaN included); their `ref_logprob` is then whatever that row
            gives (NaN for a NaN row).
        w: interpolation weight, a float or a [B] float tensor: 0 -> policy, -1 -> reference,
            +beta / -beta -> PILAF's pi_plus / pi_minus. Any finite value.
        temperature: > 0, scalar or [B]. Divides the interpolated logits.
        top_p: in (0, 1], scalar or [B]; 1 disables it.
        top_k: >= 0, int or integer [B] tensor; 0 disables it. Applied before top_p, and top_p acts on
            the distribution renormalised over the top-k set (the Hugging Face / vLLM order).
        generator: source of the noise when `uniform` is None (one torch.rand draw per row).
        uniform: [B] noise in [0, 1) to use instead of drawing it (read as float32): the token is the
            first, in vocabulary order, whose cumulative probability exceeds it (inverse CDF). Both
            backends consume exactly this noise, so they return the same tokens for the same uniform
            (up to float rounding: a uniform within ~1e-6 of a CDF step may land on either side).
        vocab_size: number of tokens the tokenizer can emit; default the narrower of the two logits
            widths (padded widths such as 128,256 vs 128,320 are common). Columns at or beyond it are
            never sampled and take no part in any of the three normalisations.
        backend: "torch", "triton" (CUDA tensors), or "auto" (triton on CUDA when importable).

    Semantics:
        * Log-probs: `policy_logprob` and `ref_logprob` are log softmax of the raw logits at
          temperature 1 over the first `vocab_size` columns, unaffected by top-k / top-p. The
          `sampled_logprob` is under the distribution sampled from: interpolation, temperature and
          top-k / top-p renormalisation included.
        * -inf logits mean "banned token": a token is banned where the policy logit is -inf, or the
          reference logit is -inf in a row with w != 0 (so a token the reference forbids is never
          given infinite weight by pi_plus, and a token the policy forbids stays forbidden under
          every w, w = -1 included). Banned tokens are never sampled and have probability 0 in the
          sampled distribution. NaN or +inf logits raise (in the reference only for rows with w != 0).
        * Ties at a top-k / top-p threshold are all kept: the kept set is {tokens with z >= t}, t the
          k-th largest z for top-k and, for top-p, the largest value whose tail mass reaches top_p
          (see `sampling_torch.keep_threshold`). Both backends use this rule.
        * Bad input raises ValueError: shapes, dtypes, devices and scalar parameters are checked on
          the host without reading the logits; non-finite logits and per-row tensor parameters are
          checked from per-row reductions the backend computes anyway, which costs one [B]-sized
          device-to-host read per call.
    """
    inp: SamplingInputs = check_inputs(
        policy_logits,
        ref_logits,
        w,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        generator=generator,
        uniform=uniform,
        vocab_size=vocab_size,
    )
    chosen = resolve_backend(backend, inp.device)
    if inp.batch_size == 0:
        empty = inp.policy.new_empty(0, dtype=torch.float32)
        ref_lp = empty if inp.ref is not None else None
        return InterpolatedSample(inp.policy.new_empty(0, dtype=torch.int64), empty, ref_lp, empty)
    if chosen == "triton":
        from openrlhf_pilaf.ops.sampling_triton import sample_triton

        out: BackendOutput = sample_triton(inp)
    else:
        out = sample_torch(inp)
    raise_for_status(out.status)
    return InterpolatedSample(out.token_ids, out.policy_logprob, out.ref_logprob, out.sampled_logprob)
