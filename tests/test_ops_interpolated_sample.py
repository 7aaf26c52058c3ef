"""interpolated_sample (torch backend): log-probs against float64, and every documented semantic rule."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from openrlhf_pilaf.ops import InterpolatedSample, exact_distribution, interpolated_sample

W_MIX = [0.0, -1.0, 0.1, -0.1, 0.5, 0.0, -0.3, 1.0]


def _logits(batch: int, width: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, width, generator=g) * scale


def _check_against_exact(out: InterpolatedSample, exact, tol: float) -> None:
    tok = out.token_ids.unsqueeze(1)
    p_tok = exact.probs.gather(1, tok).squeeze(1)
    assert (p_tok > 0).all(), "a token with probability 0 was drawn"
    torch.testing.assert_close(out.sampled_logprob.double(), p_tok.log(), atol=tol, rtol=0)
    torch.testing.assert_close(
        out.policy_logprob.double(), exact.policy_logprobs.gather(1, tok).squeeze(1), atol=tol, rtol=0
    )
    if exact.ref_logprobs is not None:
        ref_tok = exact.ref_logprobs.gather(1, tok).squeeze(1)
        torch.testing.assert_close(out.ref_logprob.double(), ref_tok, atol=tol, rtol=0)


FILTERS = [
    {},
    {"temperature": 0.7},
    {"top_k": 20},
    {"top_p": 0.8, "temperature": 1.3},
    {"top_k": 50, "top_p": 0.9},
]


@pytest.mark.parametrize("kwargs", FILTERS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "plain")
def test_fp32_logprobs_match_float64_within_1e5(kwargs):
    batch, vocab = 64, 1000
    hp, hr = _logits(batch, vocab, 1), _logits(batch, vocab + 64, 2)
    w = torch.tensor(W_MIX * (batch // len(W_MIX)))
    out = interpolated_sample(hp, hr, w, generator=torch.Generator().manual_seed(3), backend="torch", **kwargs)
    _check_against_exact(out, exact_distribution(hp, hr, w, **kwargs), tol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", [{}, {"top_k": 20, "top_p": 0.9, "temperature": 0.8}], ids=["plain", "filtered"])
def test_half_precision_inputs(dtype, kwargs):
    """Half-precision logits are read as they are and computed on in float32, so against float64 of
    the same values the log-probs hold to 1e-5, well inside the 2e-2 asked of bf16. (Against the
    float32 logits before rounding they differ by the rounding itself, ~|h| * 2^-8 for bf16.)"""
    batch, vocab = 64, 1000
    hp, hr = _logits(batch, vocab, 4).to(dtype), _logits(batch, vocab, 5).to(dtype)
    w = torch.tensor(W_MIX * (batch // len(W_MIX)))
    out = interpolated_sample(hp, hr, w, generator=torch.Generator().manual_seed(6), backend="torch", **kwargs)
    _check_against_exact(out, exact_distribution(hp, hr, w, **kwargs), tol=1e-5)


def test_result_type_and_dtypes():
    hp, hr = _logits(5, 40, 7), _logits(5, 40, 8)
    out = interpolated_sample(hp, hr, 0.1, backend="torch")
    assert isinstance(out, InterpolatedSample)
    assert out.token_ids.dtype == torch.int64 and out.token_ids.shape == (5,)
    for t in (out.policy_logprob, out.ref_logprob, out.sampled_logprob):
        assert t.dtype == torch.float32 and t.shape == (5,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.token_ids = None


def test_endpoints_of_the_family():
    """w = 0 samples the policy and w = -1 the reference: sampled_logprob equals that model's log-prob."""
    hp, hr = _logits(16, 100, 9), _logits(16, 100, 10)
    out0 = interpolated_sample(hp, hr, 0.0, backend="torch")
    torch.testing.assert_close(out0.sampled_logprob, out0.policy_logprob, atol=1e-5, rtol=0)
    out1 = interpolated_sample(hp, hr, -1.0, backend="torch")
    torch.testing.assert_close(out1.sampled_logprob, out1.ref_logprob, atol=1e-5, rtol=0)


def test_model_logprobs_are_at_temperature_one_and_unfiltered():
    hp, hr = _logits(16, 100, 11), _logits(16, 100, 12)
    u = torch.rand(16, generator=torch.Generator().manual_seed(13))
    out = interpolated_sample(hp, hr, 0.2, temperature=0.5, top_k=10, top_p=0.7, uniform=u, backend="torch")
    tok = out.token_ids.unsqueeze(1)
    torch.testing.assert_close(out.policy_logprob, torch.log_softmax(hp, 1).gather(1, tok).squeeze(1))
    torch.testing.assert_close(out.ref_logprob, torch.log_softmax(hr, 1).gather(1, tok).squeeze(1))


def test_w_zero_needs_no_reference():
    hp, hr = _logits(8, 50, 14), _logits(8, 50, 15)
    u = torch.rand(8, generator=torch.Generator().manual_seed(16))
    without = interpolated_sample(hp, None, 0.0, top_p=0.9, uniform=u, backend="torch")
    with_ref = interpolated_sample(hp, hr, 0.0, top_p=0.9, uniform=u, backend="torch")
    assert without.ref_logprob is None
    assert torch.equal(without.token_ids, with_ref.token_ids)
    torch.testing.assert_close(without.sampled_logprob, with_ref.sampled_logprob)
    zeros = torch.zeros(8)
    assert torch.equal(
        interpolated_sample(hp, None, zeros, top_p=0.9, uniform=u, backend="torch").token_ids, without.token_ids
    )


@pytest.mark.parametrize("garbage", [float("nan"), float("inf"), float("-inf"), 1e30])
def test_reference_rows_with_w_zero_do_not_influence_the_sample(garbage):
    batch = 8
    hp, hr = _logits(batch, 60, 17), _logits(batch, 60, 18)
    w = torch.tensor([0.0, 0.1, 0.0, -1.0, 0.0, 0.5, 0.0, -0.1])
    u = torch.rand(batch, generator=torch.Generator().manual_seed(19))
    dirty = hr.clone()
    dirty[w == 0] = garbage
    clean = interpolated_sample(hp, hr, w, top_k=10, uniform=u, backend="torch")
    out = interpolated_sample(hp, dirty, w, top_k=10, uniform=u, backend="torch")
    assert torch.equal(out.token_ids, clean.token_ids)
    torch.testing.assert_close(out.sampled_logprob, clean.sampled_logprob)
    torch.testing.assert_close(out.policy_logprob, clean.policy_logprob)
    nz = w != 0
    torch.testing.assert_close(out.ref_logprob[nz], clean.ref_logprob[nz])
    if math.isnan(garbage):  # documented: a w = 0 row's ref_logprob is whatever its reference row gives
        assert out.ref_logprob[~nz].isnan().all()


def test_vocab_size_default_is_the_narrower_width_and_padding_is_ignored():
    batch, vocab = 4, 40
    hp = _logits(batch, vocab, 20)
    hr = torch.cat([_logits(batch, vocab, 21), torch.full((batch, 8), float("nan"))], dim=1)  # padded, garbage
    u = torch.rand(batch, generator=torch.Generator().manual_seed(22))
    out = interpolated_sample(hp, hr, 0.3, uniform=u, backend="torch")
    ref = interpolated_sample(hp, hr[:, :vocab], 0.3, uniform=u, backend="torch")
    assert torch.equal(out.token_ids, ref.token_ids)
    torch.testing.assert_close(out.ref_logprob, ref.ref_logprob)


def test_columns_beyond_vocab_size_are_never_sampled_nor_normalised():
    batch, vocab, width = 20_000, 24, 32
    hp = _logits(1, width, 23).expand(batch, width).clone()
    hr = _logits(1, width + 8, 24).expand(batch, width + 8).clone()
    hp[:, vocab:] = 50.0  # would take all the mass if they counted
    hr[:, vocab:] = float("nan")  # and would raise if they were read
    out = interpolated_sample(
        hp, hr, 0.2, vocab_size=vocab, generator=torch.Generator().manual_seed(25), backend="torch"
    )
    assert int(out.token_ids.max()) < vocab
    _check_against_exact(out, exact_distribution(hp, hr, 0.2, vocab_size=vocab), tol=1e-5)


def test_neg_inf_bans_a_token_under_every_w():
    batch, vocab = 30_000, 12
    hp = _logits(1, vocab, 26).expand(batch, vocab).clone()
    hr = _logits(1, vocab, 27).expand(batch, vocab).clone()
    hp[:, 3] = float("-inf")  # banned by the policy: never, whatever w (w = -1 included)
    hr[:, 7] = float("-inf")  # banned by the reference: never where w != 0, allowed where w == 0
    w = torch.tensor([0.0, -1.0, 0.1, 0.5, -0.1]).repeat(batch // 5)
    out = interpolated_sample(hp, hr, w, generator=torch.Generator().manual_seed(28), backend="torch")
    assert not (out.token_ids == 3).any()
    assert not ((out.token_ids == 7) & (w != 0)).any()
    assert ((out.token_ids == 7) & (w == 0)).any()
    _check_against_exact(out, exact_distribution(hp, hr, w), tol=1e-5)
    assert torch.isfinite(out.policy_logprob).all()


def test_ties_at_the_threshold_are_kept():
    """Top-k keeps every token equal to the k-th largest; top-p keeps every token equal to the one
    that crosses top_p. Token ids in vocabulary order of the kept set follow the uniform."""
    z = torch.tensor([[1.0, 3.0, 2.0, 0.0, 2.0, 2.0, -1.0]])
    u = torch.linspace(0, 0.999, 2000)
    hp = z.expand(2000, 7)
    kept_k = set(interpolated_sample(hp, None, 0.0, top_k=2, uniform=u, backend="torch").token_ids.tolist())
    assert kept_k == {1, 2, 4, 5}  # the 2nd largest value (2.0) occurs three times: all kept
    p = torch.softmax(z[0].double(), 0)
    top_mass = float(p[1])  # token 1 alone; any top_p above it reaches into the tied 2.0s
    kept_p = set(
        interpolated_sample(hp, None, 0.0, top_p=top_mass + 0.01, uniform=u, backend="torch").token_ids.tolist()
    )
    assert kept_p == {1, 2, 4, 5}
    only_top = set(
        interpolated_sample(hp, None, 0.0, top_p=top_mass * 0.99, uniform=u, backend="torch").token_ids.tolist()
    )
    assert only_top == {1}


def test_inverse_cdf_in_vocabulary_order():
    hp = _logits(1, 30, 29)
    hr = _logits(1, 30, 30)
    exact = exact_distribution(hp, hr, 0.4, top_k=12).probs[0]
    cdf = torch.cumsum(exact, 0)
    u = torch.tensor([0.0, 0.123, 0.5, 0.77, 0.9999])
    out = interpolated_sample(hp.expand(5, 30), hr.expand(5, 30), 0.4, top_k=12, uniform=u, backend="torch")
    expected = torch.searchsorted(cdf, u.double(), right=True)
    assert torch.equal(out.token_ids, expected)
    kept = torch.nonzero(exact > 0).flatten()
    assert int(out.token_ids[0]) == int(kept[0]) and int(out.token_ids[-1]) == int(kept[-1])


def test_per_row_tensors_equal_per_row_scalars():
    batch, vocab = 8, 80
    hp, hr = _logits(batch, vocab, 31), _logits(batch, vocab, 32)
    w = torch.tensor([0.0, -1.0, 0.1, -0.1, 0.5, 0.0, 2.0, -0.5])
    temp = torch.tensor([1.0, 0.5, 2.0, 1.0, 0.7, 1.3, 1.0, 0.9])
    top_p = torch.tensor([1.0, 0.9, 0.5, 1.0, 0.95, 0.3, 0.8, 1.0])
    top_k = torch.tensor([0, 0, 5, 10, 1, 3, 0, 79])
    u = torch.rand(batch, generator=torch.Generator().manual_seed(33))
    out = interpolated_sample(hp, hr, w, temperature=temp, top_p=top_p, top_k=top_k, uniform=u, backend="torch")
    for i in range(batch):
        row = interpolated_sample(
            hp[i : i + 1], hr[i : i + 1], float(w[i]), temperature=float(temp[i]), top_p=float(top_p[i]),
            top_k=int(top_k[i]), uniform=u[i : i + 1], backend="torch",
        )  # fmt: skip
        assert int(row.token_ids) == int(out.token_ids[i])
        torch.testing.assert_close(row.sampled_logprob, out.sampled_logprob[i : i + 1])


def test_generator_makes_draws_reproducible():
    hp, hr = _logits(64, 100, 34), _logits(64, 100, 35)
    a = interpolated_sample(hp, hr, 0.1, generator=torch.Generator().manual_seed(36), backend="torch")
    b = interpolated_sample(hp, hr, 0.1, generator=torch.Generator().manual_seed(36), backend="torch")
    c = interpolated_sample(hp, hr, 0.1, generator=torch.Generator().manual_seed(37), backend="torch")
    assert torch.equal(a.token_ids, b.token_ids) and not torch.equal(a.token_ids, c.token_ids)


def test_empty_batch():
    out = interpolated_sample(torch.zeros(0, 10), torch.zeros(0, 10), 0.1, backend="torch")
    assert out.token_ids.shape == (0,) and out.ref_logprob.shape == (0,)


def test_auto_backend_is_torch_on_cpu():
    from openrlhf_pilaf.ops import resolve_backend

    assert resolve_backend("auto", torch.device("cpu")) == "torch"


def test_non_contiguous_rows():
    hp = _logits(8, 100, 38)[:, ::2]  # column stride 2
    hr = _logits(16, 50, 39)[::2]  # row stride 100
    u = torch.rand(8, generator=torch.Generator().manual_seed(40))
    out = interpolated_sample(hp, hr, 0.3, uniform=u, backend="torch")
    ref = interpolated_sample(hp.contiguous(), hr.contiguous(), 0.3, uniform=u, backend="torch")
    assert torch.equal(out.token_ids, ref.token_ids)
