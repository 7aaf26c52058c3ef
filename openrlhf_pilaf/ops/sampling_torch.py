"""Interpolated sampling in plain PyTorch (CPU and CUDA): the reference semantics of the fused kernel.

Every step below has a twin in `sampling_triton.py`; the two must agree on the token for the same
uniform, so the float32 expressions are written in the same order (see the notes at each step).
The contract itself is documented on `openrlhf_pilaf.ops.interpolated_sample`.
"""

from __future__ import annotations

import torch

from openrlhf_pilaf.ops.validation import BackendOutput, RowStatus, SamplingInputs

NEG_INF = float("-inf")


def _as_col(x: float | int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """A per-row parameter as a float32 [B, 1] column, or a float32 0-d tensor for a scalar."""
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32).unsqueeze(1)
    return torch.tensor(float(x), dtype=torch.float32, device=device)


def _scalar_or_col(x: float | torch.Tensor) -> float | torch.Tensor:
    return x.to(torch.float32).unsqueeze(1) if isinstance(x, torch.Tensor) else float(x)


def _f32(x: float) -> torch.Tensor:
    """A Python scalar as a float32 0-d CPU tensor, usable with tensors on any device. Arithmetic
    with it rounds in float32 as the kernel does (`1 + w` on a Python float would be done in float64
    and rounded once, which can differ by one ulp)."""
    return torch.tensor(x, dtype=torch.float32)


def interpolated_logits(
    hp: torch.Tensor, hr: torch.Tensor | None, w: float | torch.Tensor, temperature: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """z = ((1 + w) * h_policy - w * h_ref) / T over float32 logits, and the banned-token mask.

    A token is banned (z = -inf) where the policy logit is -inf, or where the reference logit is
    -inf in a row with w != 0. Where w == 0 the reference is replaced by 0 before the product, so
    that NaN or inf in those reference rows cannot reach z (0 * NaN would be NaN). `w` and
    `temperature` are Python scalars (fast paths, same float32 results) or float32 [B, 1] columns.
    """
    if not isinstance(w, torch.Tensor) and w == 0:
        z, banned = hp, hp == NEG_INF  # (1 + 0) * h - 0 * 0 = h exactly
    elif not isinstance(w, torch.Tensor):
        w32 = _f32(w)
        banned = (hp == NEG_INF) | (hr == NEG_INF)
        # docs/interpolation.md: z(w) = (1 + w) * h_policy - w * h_ref.
        z = ((1 + w32) * hp - w32 * hr).masked_fill(banned, NEG_INF)
    else:
        w_nonzero = w != 0
        if hr is None:
            hr_eff = _f32(0.0)
            banned = hp == NEG_INF
        else:
            hr_eff = torch.where(w_nonzero, hr, 0.0)
            banned = (hp == NEG_INF) | (w_nonzero & (hr == NEG_INF))
        z = ((1 + w) * hp - w * hr_eff).masked_fill(banned, NEG_INF)
    if isinstance(temperature, torch.Tensor):
        z = z / temperature
    elif temperature != 1.0:
        z = z / _f32(temperature)
    return z, banned


def _row_status(
    inp: SamplingInputs,
    lse_p: torch.Tensor,
    lse_r: torch.Tensor | None,
    z: torch.Tensor,
    z_max: torch.Tensor,
    banned: torch.Tensor,
) -> torch.Tensor:
    """RowStatus per row: the first failing check, in the order of the enum (as the kernel does).

    Non-finite logits are read off reductions computed anyway: a logsumexp is NaN or +inf exactly
    when its row holds NaN or +inf; z's max is NaN or +inf when an allowed token's z is.
    """
    batch = z.shape[0]
    status = torch.zeros(batch, dtype=torch.int32, device=z.device)

    def flag(bad: torch.Tensor, code: RowStatus) -> None:
        nonlocal status
        status = torch.where((status == 0) & bad, int(code), status)

    # Scalar parameters were checked on the host; [B] tensors are checked here.
    w, t, p, k, u = inp.w, inp.temperature, inp.top_p, inp.top_k, inp.uniform
    if isinstance(w, torch.Tensor):
        flag(~torch.isfinite(w), RowStatus.BAD_W)
    if isinstance(t, torch.Tensor):
        flag(~(torch.isfinite(t) & (t > 0)), RowStatus.BAD_TEMPERATURE)
    if isinstance(p, torch.Tensor):
        flag(~((p > 0) & (p <= 1)), RowStatus.BAD_TOP_P)
    if isinstance(k, torch.Tensor):
        flag(k < 0, RowStatus.BAD_TOP_K)
    flag(~((u >= 0) & (u < 1)), RowStatus.BAD_UNIFORM)
    w_nonzero = w != 0 if isinstance(w, torch.Tensor) else torch.full_like(status, w != 0, dtype=torch.bool)
    if lse_r is None:
        flag(w_nonzero, RowStatus.MISSING_REF)
    flag(torch.isnan(lse_p) | torch.isposinf(lse_p), RowStatus.POLICY_NONFINITE)
    if lse_r is not None:
        flag(w_nonzero & (torch.isnan(lse_r) | torch.isposinf(lse_r)), RowStatus.REF_NONFINITE)
    # -inf in z must mean banned; NaN / +inf show in the max.
    overflow = torch.isnan(z_max) | torch.isposinf(z_max) | (torch.isneginf(z) != banned).any(dim=1)
    flag(overflow, RowStatus.OVERFLOW)
    flag(torch.isneginf(z_max), RowStatus.NO_TOKEN)
    return status


def keep_threshold(
    z: torch.Tensor, m: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, n_finite: torch.Tensor
) -> torch.Tensor:
    """The top-k / top-p threshold t per row [B, 1]: the kept set is {tokens with z >= t}.

    Rule (the kernel finds the same t by bisection over values, without sorting):
      t_k = the k-th largest z (counting repeats) when 0 < k < #finite, else the smallest finite z;
      top-p acts on the distribution renormalised over {z >= t_k} (top-k first, as in Hugging Face
      and vLLM): t = the LARGEST value v with mass(z >= v) >= top_p * mass(z >= t_k), where
      mass(S) = sum over S of exp(z - max z).
    Ties at the threshold are all kept: the kept set may hold more than k tokens, and every token
    as probable as the one that crosses top_p is kept.
    """
    zs = z.sort(dim=1, descending=True).values  # -inf (banned) last
    vocab = z.shape[1]
    k_active = (top_k > 0) & (top_k < n_finite)
    idx_k = top_k.clamp(1, vocab).long() - 1
    t_k = torch.where(k_active, zs.gather(1, idx_k.expand(z.shape[0], 1)), NEG_INF)
    kept_k = (zs >= t_k) & (zs > NEG_INF)
    es = torch.where(kept_k, torch.exp(zs - m), 0.0)
    cum = es.cumsum(dim=1)
    target = top_p * cum[:, -1:]
    # First sorted position whose cumulative mass reaches the target; its value is t. (If rounding
    # leaves the target above the total, the last position with mass: everything that can be drawn.)
    j = torch.minimum(torch.searchsorted(cum, target), torch.searchsorted(cum, cum[:, -1:].contiguous()))
    t_p = zs.gather(1, j)
    t_all = torch.where(k_active, t_k, zs.gather(1, (n_finite - 1).clamp(min=0).long()))
    return torch.where(top_p < 1, t_p, t_all)


def sample_torch(inp: SamplingInputs) -> BackendOutput:
    """Sample one token per row by inverse CDF over the kept set, in vocabulary order."""
    vocab, device = inp.vocab_size, inp.device
    hp = inp.policy[:, :vocab].float()
    hr = inp.ref[:, :vocab].float() if inp.ref is not None else None
    z, banned = interpolated_logits(hp, hr, _scalar_or_col(inp.w), _scalar_or_col(inp.temperature))
    lse_p = torch.logsumexp(hp, dim=1)
    lse_r = torch.logsumexp(hr, dim=1) if hr is not None else None
    z_max = z.max(dim=1, keepdim=True).values
    status = _row_status(inp, lse_p, lse_r, z, z_max.squeeze(1), banned)

    # Rows whose status is not OK get garbage below, but nothing raises.
    m = torch.where(torch.isfinite(z_max), z_max, 0.0)
    probs = torch.exp(z - m)  # banned tokens: exp(-inf) = 0
    if inp.may_filter:
        n_finite = (~banned).sum(dim=1, keepdim=True)
        top_k, top_p = _as_col(inp.top_k, device), _as_col(inp.top_p, device)
        probs = torch.where(z >= keep_threshold(z, m, top_k, top_p, n_finite), probs, 0.0)

    # Inverse CDF: the first token whose cumulative mass exceeds u * mass. If rounding leaves no
    # cumulative value above the target, the last token with positive mass (where the cumulative
    # sum reaches its total) is taken.
    cum = probs.cumsum(dim=1)
    mass = cum[:, -1:].contiguous()
    first = torch.searchsorted(cum, inp.uniform.unsqueeze(1) * mass, right=True)
    last_positive = torch.searchsorted(cum, mass)
    token = torch.where(first < vocab, first, last_positive).squeeze(1)
    token = torch.where(status == 0, token, -1)
    safe = token.clamp(0, vocab - 1).unsqueeze(1)

    policy_lp = hp.gather(1, safe).squeeze(1) - lse_p
    ref_lp = hr.gather(1, safe).squeeze(1) - lse_r if hr is not None else None
    sampled_lp = (z.gather(1, safe) - m - torch.log(mass)).squeeze(1)
    return BackendOutput(token.to(torch.int64), policy_lp, ref_lp, sampled_lp, status)
