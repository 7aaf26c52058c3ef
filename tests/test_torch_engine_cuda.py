"""The PyTorch interpolated engine on CUDA: dynamic cache (eager) and static cache + torch.compile (CUDA graphs),
with the fused Triton sampling step, against the exact float64 semantics of the two HF models.

Skipped without CUDA (CI is CPU-only; test_torch_engine.py covers the same contract on CPU).
"""

from __future__ import annotations

import pytest
import torch

from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine
from openrlhf_pilaf.testing.exact import hf_logits, interpolated_logits, interpolated_logprobs

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

MIXED_W = (0.0, 0.1, -0.1, -1.0, 1.0)
LOGPROB_TOL = 1e-3  # fp32 on GPU (TF32 off) vs float64 from the same fp32 weights on CPU


@pytest.fixture(scope="module")
def models(tiny_suite):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def load(path, device):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()

    return {
        "tok": AutoTokenizer.from_pretrained(tiny_suite.policy),
        "cuda": (load(tiny_suite.policy, "cuda"), load(tiny_suite.reference, "cuda")),
        "cpu": (load(tiny_suite.policy, "cpu"), load(tiny_suite.reference, "cpu")),
    }


@pytest.fixture(scope="module")
def prompts(models):
    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    tok = models["tok"]
    return [tok(p).input_ids for p in synthetic_prompts(4)]


@pytest.mark.parametrize("mode", ["dynamic", "static+compile"])
def test_cuda_engine_matches_exact(models, prompts, mode):
    tok = models["tok"]
    policy, reference = models["cuda"]
    engine = TorchInterpolatedEngine(
        policy,
        reference,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        cache="static" if mode != "dynamic" else "dynamic",
        compile=mode != "dynamic",
    )
    plan = GenerationPlan.grid(prompts, MIXED_W)
    for _ in range(2):  # the second run replays compiled graphs
        samples = engine.generate(plan, GenerationParams(max_new_tokens=16, seed=0))
    cpu_policy, cpu_reference = models["cpu"]
    worst = 0.0
    for s in samples:
        seq = s.prompt_ids + s.token_ids
        hp, hr = hf_logits(cpu_policy, seq), hf_logits(cpu_reference, seq)
        rows = slice(len(s.prompt_ids) - 1, len(seq) - 1)
        idx = torch.tensor(s.token_ids)[:, None]
        for field, lp in (
            ("policy_logprobs", torch.log_softmax(hp, -1)),
            ("reference_logprobs", torch.log_softmax(hr, -1)),
            ("sampled_logprobs", interpolated_logprobs(hp, hr, s.w)),
        ):
            want = lp[rows].gather(-1, idx).squeeze(-1)
            worst = max(worst, (torch.tensor(getattr(s, field), dtype=torch.float64) - want).abs().max().item())
    print(f"{mode}: max |log-prob - exact| = {worst:.2e}")
    assert worst < LOGPROB_TOL

    greedy = engine.generate(plan, GenerationParams(max_new_tokens=8, top_k=1, stop_token_ids=()))
    for s in greedy:
        seq = s.prompt_ids + s.token_ids
        z = interpolated_logits(hf_logits(cpu_policy, seq), hf_logits(cpu_reference, seq), s.w)
        assert s.token_ids == z[len(s.prompt_ids) - 1 : -1].argmax(-1).tolist(), (mode, s.w)
