"""The fused Triton kernel against the torch path, on CPU, under Triton's interpreter.

TRITON_INTERPRET=1 must be set before triton is first imported, and the main pytest process may
already have imported it (or must not be switched to the interpreter for other tests). So this
module runs in two roles:
  * normally, its one test starts `python -m pytest <this file>` in a fresh process with
    TRITON_INTERPRET=1 and passes if that run passes;
  * in that process (or whenever pytest is started with TRITON_INTERPRET=1), the kernel cases below
    are defined and run.
Sizes are small (the interpreter runs each program in Python), but tiny block and chunk sizes make
every row span several blocks and several chunks, so the split and combine paths are exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(INTERPRETED, reason="already under the interpreter: the kernel cases run directly")
def test_kernel_cases_under_triton_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-W", "ignore::RuntimeWarning"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, f"interpreter run failed ({summary}):\n{proc.stdout[-8000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in summary and "skipped" not in summary.replace("1 skipped", ""), summary
    print(f"interpreter run: {summary}")


if INTERPRETED:
    pytest.importorskip("triton")

    from openrlhf_pilaf.ops import interpolated_sample
    from openrlhf_pilaf.ops.sampling_torch import sample_torch
    from openrlhf_pilaf.ops.sampling_triton import sample_triton
    from openrlhf_pilaf.ops.validation import check_inputs

    B = 12
    W_MIX = torch.tensor([0.0, -1.0, 0.1, -0.1, 0.5, 0.0, 2.0, -0.5, 0.0, 0.3, -0.2, 1.0])
    SMALL = {"block": 16, "chunk": 32}

    def _logits(batch, width, seed, dtype=torch.float32, scale=2.0):
        g = torch.Generator().manual_seed(seed)
        return (torch.randn(batch, width, generator=g) * scale).to(dtype)

    def _compare(hp, hr, w, launch=SMALL, uniform=None, **kwargs):
        """Same inputs and noise through both backends: identical ids and statuses, log-probs to 1e-5."""
        u = uniform if uniform is not None else torch.rand(hp.shape[0], generator=torch.Generator().manual_seed(99))
        inp = check_inputs(
            hp, hr, w, temperature=kwargs.pop("temperature", 1.0), top_p=kwargs.pop("top_p", 1.0),
            top_k=kwargs.pop("top_k", 0), generator=None, uniform=u, vocab_size=kwargs.pop("vocab_size", None),
        )  # fmt: skip
        assert not kwargs
        want, got = sample_torch(inp), sample_triton(inp, **launch)
        assert torch.equal(got.status, want.status)
        assert torch.equal(got.token_ids, want.token_ids), (got.token_ids, want.token_ids)
        torch.testing.assert_close(got.policy_logprob, want.policy_logprob, atol=1e-5, rtol=0)
        torch.testing.assert_close(got.sampled_logprob, want.sampled_logprob, atol=1e-5, rtol=0)
        if hr is not None:
            ok = ~want.ref_logprob.isnan()
            torch.testing.assert_close(got.ref_logprob[ok], want.ref_logprob[ok], atol=1e-5, rtol=0)
        return got

    def test_plain_per_row_weights_and_temperatures():
        temp = torch.linspace(0.5, 2.0, B)
        _compare(_logits(B, 70, 1), _logits(B, 70, 2), W_MIX, temperature=temp)

    def test_top_k_and_top_p_per_row_with_fallback_search():
        top_k = torch.tensor([0, 1, 2, 5, 10, 69, 70, 200, 3, 0, 7, 1])
        top_p = torch.tensor([1.0, 0.9, 0.5, 0.99, 0.3, 0.8, 1.0, 0.7, 0.95, 0.6, 1.0, 0.2])
        # One split round of 4 pivots: most rows finish in the sample kernel's single-program search.
        launch = {**SMALL, "rounds": 1, "npiv": 4}
        _compare(_logits(B, 70, 3), _logits(B, 70, 4), W_MIX, launch=launch, top_k=top_k, top_p=top_p, temperature=0.8)

    def test_threshold_found_by_split_rounds_alone():
        """max_steps=0 turns the single-program fallback off: the (row, chunk) rounds must find the
        exact threshold by themselves, and the sample kernel then scans one chunk only."""
        launch = {**SMALL, "rounds": 4, "npiv": 16, "max_steps": 0}
        _compare(_logits(B, 70, 5), _logits(B, 70, 6), W_MIX, launch=launch, top_p=0.85, top_k=torch.arange(B) * 3)

    def test_search_entirely_in_the_sample_kernel():
        _compare(
            _logits(B, 40, 7), _logits(B, 40, 8), W_MIX, launch={**SMALL, "rounds": 0, "npiv": 8}, top_k=6, top_p=0.9
        )

    def test_ties_everywhere():
        """Integer logits: many exact ties at every threshold; the kernel keeps all of them, as torch."""
        hp, hr = _logits(B, 64, 9).round(), _logits(B, 64, 10).round()
        w = torch.tensor([0.0, -1.0, 1.0, 0.0, -1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 2.0])  # keep z integral
        _compare(hp, hr, w, launch={**SMALL, "rounds": 2, "npiv": 4}, top_k=torch.arange(B) % 7, top_p=0.7)

    @pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
    def test_half_precision_and_padded_reference(dtype):
        hp = _logits(B, 48, 11, dtype)
        hr = torch.cat([_logits(B, 48, 12, dtype), torch.full((B, 8), float("nan"), dtype=dtype)], dim=1)
        _compare(hp, hr, W_MIX, top_p=0.9)

    def test_vocab_size_excludes_columns():
        hp, hr = _logits(B, 64, 13), _logits(B, 72, 14)
        hp[:, 40:] = 30.0
        hr[:, 40:] = float("nan")
        got = _compare(hp, hr, W_MIX, vocab_size=40, top_k=8)
        assert int(got.token_ids.max()) < 40

    def test_without_reference():
        _compare(_logits(B, 50, 15, torch.float16), None, 0.0, top_k=5, temperature=0.7)

    def test_bans_and_garbage_reference_rows():
        hp, hr = _logits(B, 50, 16), _logits(B, 50, 17)
        hp[:, [3, 30]] = float("-inf")
        hr[:, [4, 31]] = float("-inf")
        hr[W_MIX == 0] = float("nan")  # never read for sampling where w == 0
        got = _compare(hp, hr, W_MIX, top_p=0.95)
        assert not torch.isin(got.token_ids, torch.tensor([3, 30])).any()
        assert not (torch.isin(got.token_ids, torch.tensor([4, 31])) & (W_MIX != 0)).any()

    def test_non_contiguous_inputs():
        hp = _logits(B, 100, 18)[:, ::2]
        hr = _logits(2 * B, 50, 19)[::2]
        _compare(hp, hr, W_MIX, top_k=9)

    def test_inverse_cdf_on_a_grid_of_uniforms():
        """One row of logits, 64 uniforms from 0 to just below 1: the kernel cuts the unit interval
        into tokens exactly where the torch path does."""
        n = 32
        hp, hr = _logits(1, 45, 20).expand(n, 45), _logits(1, 45, 21).expand(n, 45)
        u = torch.cat([torch.linspace(0, 0.98, n - 1), torch.tensor([1 - 2**-24])])
        got = _compare(hp, hr, 0.3, uniform=u, top_k=12, top_p=0.9)
        assert got.token_ids.unique().numel() > 3

    def test_public_dispatcher_uses_the_kernel():
        hp, hr = _logits(4, 30, 22), _logits(4, 30, 23)
        u = torch.rand(4, generator=torch.Generator().manual_seed(24))
        a = interpolated_sample(hp, hr, 0.1, top_p=0.9, uniform=u, backend="triton")
        b = interpolated_sample(hp, hr, 0.1, top_p=0.9, uniform=u, backend="torch")
        assert torch.equal(a.token_ids, b.token_ids)

    def _data_cases():
        sys.path.insert(0, str(Path(__file__).parent))
        from test_ops_sampling_errors import DATA_CASES, call

        return DATA_CASES, call

    @pytest.mark.parametrize("name", list(_data_cases()[0]))
    def test_kernel_refuses_like_torch(name):
        cases, call = _data_cases()
        overrides, message = cases[name]
        with pytest.raises(ValueError) as err:
            call("triton", **overrides)
        assert message in str(err.value)
