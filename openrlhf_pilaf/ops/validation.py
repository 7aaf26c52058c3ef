"""Host-side checks of `interpolated_sample`'s arguments, and the per-row status codes both backends share.

Why two levels of checking: the sampler runs once per decoded token, so nothing here may read a
[B, V] tensor or wait for the device. What the host can see for free (shapes, dtypes, devices,
Python scalars) is checked here and raises at once. What only the data can tell (NaN / +inf
logits, per-row parameters given as tensors, every token banned) is detected by the backend from
per-row reductions it computes anyway and reported as one int32 status per row (`RowStatus`);
the dispatcher then makes one [B]-sized check on the host and raises `ValueError` naming the rows.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from openrlhf_pilaf.utils.checks import is_int, is_real

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class RowStatus(enum.IntEnum):
    """Why a row cannot be sampled. Both backends assign the FIRST failing check in this order."""

    OK = 0
    BAD_W = 1  # w not finite
    BAD_TEMPERATURE = 2  # temperature <= 0 or not finite
    BAD_TOP_P = 3  # top_p outside (0, 1]
    BAD_TOP_K = 4  # top_k < 0
    BAD_UNIFORM = 5  # uniform outside [0, 1)
    MISSING_REF = 6  # w != 0 but ref_logits is None
    POLICY_NONFINITE = 7  # NaN or +inf among the first vocab_size policy logits
    REF_NONFINITE = 8  # NaN or +inf among the first vocab_size reference logits of a row with w != 0
    OVERFLOW = 9  # interpolated, temperature-scaled logit of an allowed token is not finite in float32
    NO_TOKEN = 10  # every token is banned (-inf)


STATUS_MESSAGES = {
    RowStatus.BAD_W: "w is not finite",
    RowStatus.BAD_TEMPERATURE: "temperature must be finite and > 0",
    RowStatus.BAD_TOP_P: "top_p must be in (0, 1]",
    RowStatus.BAD_TOP_K: "top_k must be >= 0 (0 disables it)",
    RowStatus.BAD_UNIFORM: "uniform must be in [0, 1)",
    RowStatus.MISSING_REF: "w != 0 needs ref_logits, which is None",
    RowStatus.POLICY_NONFINITE: "policy_logits contain NaN or +inf (within vocab_size)",
    RowStatus.REF_NONFINITE: "ref_logits contain NaN or +inf (within vocab_size) in a row with w != 0",
    RowStatus.OVERFLOW: "the interpolated logits (1 + w) * h_policy - w * h_ref, divided by the temperature, "
    "overflow float32; use a smaller |w| or a larger temperature",
    RowStatus.NO_TOKEN: "every token is banned (-inf logit in the policy, or in the reference where w != 0)",
}


def raise_for_status(status: torch.Tensor) -> None:
    """Raise `ValueError` if any row's status is not OK. One [B]-sized device->host read on the good
    path; the row numbers are gathered only when something is wrong."""
    if status.numel() == 0 or not bool((status != 0).any()):
        return
    status = status.cpu()
    parts = []
    for code in sorted({int(c) for c in status.unique().tolist()} - {0}):
        rows = torch.nonzero(status == code).flatten().tolist()
        shown = ", ".join(str(r) for r in rows[:8]) + (", ..." if len(rows) > 8 else "")
        parts.append(f"{STATUS_MESSAGES[RowStatus(code)]} (row(s) {shown})")
    raise ValueError("interpolated_sample: " + "; ".join(parts))


Scalar = float | int


@dataclass(frozen=True)
class SamplingInputs:
    """Arguments after the host-side checks: what a backend receives.

    Per-row parameters are either a Python scalar (already checked) or a [B] tensor on the logits'
    device (float32 for w / temperature / top_p; integer for top_k), whose values the backend checks.
    """

    policy: torch.Tensor  # [B, Vp]
    ref: torch.Tensor | None  # [B, Vr]
    vocab_size: int
    w: float | torch.Tensor
    temperature: float | torch.Tensor
    top_p: float | torch.Tensor
    top_k: int | torch.Tensor
    uniform: torch.Tensor  # [B] float32, one draw per row

    @property
    def batch_size(self) -> int:
        return self.policy.shape[0]

    @property
    def device(self) -> torch.device:
        return self.policy.device

    @property
    def may_filter(self) -> bool:
        """False when no row can have top-k or top-p active: the backends then skip threshold search."""
        k_off = not isinstance(self.top_k, torch.Tensor) and self.top_k == 0
        p_off = not isinstance(self.top_p, torch.Tensor) and self.top_p >= 1.0
        return not (k_off and p_off)


class BackendOutput(NamedTuple):
    """What a backend returns; rows whose status is not OK hold token -1 and meaningless log-probs."""

    token_ids: torch.Tensor  # [B] int64
    policy_logprob: torch.Tensor  # [B] float32
    ref_logprob: torch.Tensor | None  # [B] float32
    sampled_logprob: torch.Tensor  # [B] float32
    status: torch.Tensor  # [B] int32, RowStatus codes


def _check_logits(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape [B, V], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [B, V], got {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"{name} must be float32, bfloat16 or float16, got {x.dtype}")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no vocabulary columns (shape {tuple(x.shape)})")
    return x


def _row_param(name: str, x: object, batch: int, device: torch.device, integer: bool) -> torch.Tensor | None:
    """A [B] tensor parameter, checked for shape, device and dtype (not values); None if x is no tensor."""
    if not isinstance(x, torch.Tensor):
        return None
    if x.shape != (batch,):
        raise ValueError(f"{name} as a tensor must have shape [B] = [{batch}], got {tuple(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but the logits are on {device}")
    if integer:
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"{name} as a tensor must have an integer dtype, got {x.dtype}")
        return x
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} as a tensor must have a floating dtype, got {x.dtype}")
    return x.to(torch.float32)


def _float_param(name: str, x: object, batch: int, device: torch.device, ok, rule: str) -> float | torch.Tensor:
    t = _row_param(name, x, batch, device, integer=False)
    if t is not None:
        return t
    if not is_real(x, finite=False):
        raise ValueError(f"{name} must be a real number or a [B] tensor, got {type(x).__name__}")
    x = float(x)
    if not ok(x):
        raise ValueError(f"{name} {rule}, got {x}")
    return x


def check_inputs(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor | None,
    w: float | torch.Tensor,
    *,
    temperature: float | torch.Tensor,
    top_p: float | torch.Tensor,
    top_k: int | torch.Tensor,
    generator: torch.Generator | None,
    uniform: torch.Tensor | None,
    vocab_size: int | None,
) -> SamplingInputs:
    """Check everything the host can see without touching the logits; draw the noise if not given."""
    policy = _check_logits("policy_logits", policy_logits)
    batch, device = policy.shape[0], policy.device
    if ref_logits is not None:
        ref = _check_logits("ref_logits", ref_logits)
        if ref.shape[0] != batch:
            raise ValueError(f"policy_logits has {batch} rows but ref_logits has {ref.shape[0]}")
        if ref.device != device:
            raise ValueError(f"policy_logits is on {device} but ref_logits is on {ref.device}")
        if ref.dtype != policy.dtype:
            raise ValueError(f"policy_logits is {policy.dtype} but ref_logits is {ref.dtype}; pass one dtype")
    else:
        ref = None

    widths = [policy.shape[1]] + ([ref.shape[1]] if ref is not None else [])
    if vocab_size is None:
        vocab_size = min(widths)
    elif not is_int(vocab_size, integral=True):
        raise ValueError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
    elif not 1 <= vocab_size <= min(widths):
        raise ValueError(f"vocab_size must be in [1, {min(widths)}] (the narrowest logits width), got {vocab_size}")

    w = _float_param("w", w, batch, device, math.isfinite, "must be finite")
    if ref is None and not isinstance(w, torch.Tensor) and w != 0.0:
        raise ValueError(f"w = {w} needs ref_logits; only w = 0 (the policy itself) can be sampled without it")
    temperature = _float_param(
        "temperature", temperature, batch, device, lambda t: math.isfinite(t) and t > 0, "must be finite and > 0"
    )
    top_p = _float_param("top_p", top_p, batch, device, lambda p: 0.0 < p <= 1.0, "must be in (0, 1]")
    k_tensor = _row_param("top_k", top_k, batch, device, integer=True)
    if k_tensor is not None:
        top_k = k_tensor
    elif not is_int(top_k, integral=True):
        raise ValueError(f"top_k must be an int or an integer [B] tensor, got {type(top_k).__name__}")
    elif top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 disables it), got {top_k}")
    else:
        top_k = int(top_k)

    if uniform is not None:
        if generator is not None:
            raise ValueError("pass either uniform or generator, not both")
        u = _row_param("uniform", uniform, batch, device, integer=False)
        if u is None:
            raise ValueError(f"uniform must be a [B] float tensor, got {type(uniform).__name__}")
    else:
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"generator is on {generator.device} but the logits are on {device}")
        u = torch.rand(batch, generator=generator, device=device, dtype=torch.float32)

    return SamplingInputs(
        policy=policy,
        ref=ref,
        vocab_size=int(vocab_size),
        w=w,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        uniform=u.contiguous(),
    )
