"""The fused kernel on a real GPU: same tokens as the torch path, right distribution, same refusals.

Skipped without CUDA (CI is CPU-only; the kernel's logic is covered there under the interpreter,
test_ops_triton_interpreter.py, and its compilation for sm_90 by test_ops_triton_compile.py).
On a GPU, `exp` is the hardware approximation and sums run in another order than torch's, so a
uniform that lands within float rounding of a CDF boundary (or a tail mass within rounding of
top_p) may pick the neighbouring token; such rows are allowed only if the float64 distribution
confirms they sit on a boundary.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from openrlhf_pilaf.ops import exact_distribution, interpolated_sample, resolve_backend, triton_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(not triton_available(), reason="needs triton"),
]

W_MIX = [0.0, -1.0, 0.1, -0.1, 0.5, 0.0, -0.3, 1.0]


def _on_boundary(hp, hr, w, u, kwargs, tol=1e-4) -> bool:
    exact = exact_distribution(hp[None], hr[None], float(w), **kwargs).probs[0]
    cdf = torch.cumsum(exact, 0)
    near_cdf = bool(((cdf - float(u)).abs() < tol).any())
    # A tail mass within rounding of top_p moves the threshold by one value.
    full = exact_distribution(hp[None], hr[None], float(w), **{**kwargs, "top_p": 1.0}).probs[0]
    tail = torch.sort(full, descending=True).values.cumsum(0)
    near_p = "top_p" in kwargs and bool(((tail - kwargs["top_p"]).abs() < tol).any())
    return near_cdf or near_p


@pytest.mark.parametrize("vocab", [32000, 128256])
@pytest.mark.parametrize(
    "kwargs", [{}, {"top_p": 0.9}, {"top_k": 50, "top_p": 0.95, "temperature": 0.8}], ids=["plain", "top_p", "k+p"]
)
def test_kernel_matches_torch_path(vocab, kwargs):
    batch = 64
    g = torch.Generator(device="cuda").manual_seed(0)
    hp = (torch.randn(batch, vocab, device="cuda", generator=g) * 3).bfloat16()
    hr = (torch.randn(batch, vocab + 64, device="cuda", generator=g) * 3).bfloat16()  # padded wider
    w = torch.tensor(W_MIX * (batch // len(W_MIX)), device="cuda")
    u = torch.rand(batch, device="cuda", generator=g)
    want = interpolated_sample(hp, hr, w, uniform=u, backend="torch", **kwargs)
    got = interpolated_sample(hp, hr, w, uniform=u, backend="triton", **kwargs)
    torch.testing.assert_close(got.policy_logprob, want.policy_logprob, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.ref_logprob, want.ref_logprob, atol=1e-4, rtol=0)
    differ = torch.nonzero(got.token_ids != want.token_ids).flatten().tolist()
    assert len(differ) <= 2, f"{len(differ)} of {batch} rows picked another token"
    for i in differ:
        assert _on_boundary(hp[i, :vocab].cpu(), hr[i, :vocab].cpu(), w[i], u[i], kwargs), (
            f"row {i} differs off a boundary"
        )
    same = got.token_ids == want.token_ids
    torch.testing.assert_close(got.sampled_logprob[same], want.sampled_logprob[same], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 6, "top_p": 0.9}], ids=["plain", "filtered"])
def test_kernel_distribution_chi_square(kwargs):
    n, vocab, w = 1_000_000, 64, 0.1
    g = torch.Generator(device="cuda").manual_seed(1)
    hp, hr = torch.randn(1, vocab, device="cuda", generator=g), torch.randn(1, vocab, device="cuda", generator=g)
    out = interpolated_sample(hp.expand(n, vocab), hr.expand(n, vocab), w, generator=g, backend="triton", **kwargs)
    probs = exact_distribution(hp.cpu(), hr.cpu(), w, **kwargs).probs[0]
    counts = torch.bincount(out.token_ids.cpu(), minlength=vocab).double()
    assert counts[probs == 0].sum() == 0
    keep = probs > 5 / n
    exp = probs[keep] * n
    obs = counts[keep]
    exp = exp * obs.sum() / exp.sum()
    assert chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3


def test_kernel_refuses_nan_and_auto_picks_it():
    assert resolve_backend("auto", torch.device("cuda")) == "triton"
    hp = torch.randn(4, 1000, device="cuda")
    hp[2, 17] = float("nan")
    with pytest.raises(ValueError, match=r"policy_logits contain NaN or \+inf .*row\(s\) 2"):
        interpolated_sample(hp, None, 0.0, backend="triton")
