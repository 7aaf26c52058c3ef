"""The interpolated engine inside OpenRLHF's own Ray rollout actor, and OpenRLHF's weight sync into it.

`create_interpolated_vllm_engines(cfg from --interp.* flags, ...)` (OpenRLHF's `RolloutRayActor` with our
worker extension and engine arguments, placed by us: OpenRLHF's `create_vllm_engines` is made to raise
meanwhile) starts the engine; `RolloutRayActor.generate_responses` with
`SamplingParams(extra_args={"pilaf_w": w})` must return token log-probs of each request's own distribution
(logprobs "sampled"); after `broadcast_weights` of new policy weights (gloo, as on CPU) the engine must
follow exact(new policy, old reference) and the reference half's weights must be bit-identical to before
(fingerprints: tensor bytes and packed CPU kernels). The policy checkpoints have 32 padded vocabulary
rows that the reference lacks.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from openrlhf_pilaf.engines.vllm_interp.names import W_KEY
from openrlhf_pilaf.testing.exact import hf_logits, interpolated_logprobs

pytestmark = [pytest.mark.openrlhf, pytest.mark.ray, pytest.mark.vllm]

LOGPROB_TOL = 2e-3  # fp32 engine vs fp32 HF, compared in float64
MIXED_W = (0.0, 0.1, -0.1, -1.0, 0.5)
MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def checkpoints(tiny_suite, cache_root):
    from openrlhf_pilaf.testing import TinyLlamaSpec, build_tiny_suite

    padded = build_tiny_suite(cache_root / "models", spec=TinyLlamaSpec(vocab_padding=32))
    return {"policy": padded.policy, "policy_alt": padded.policy_alt, "reference": tiny_suite.reference}


def _forbidden(*args, **kwargs):
    raise AssertionError("OpenRLHF's create_vllm_engines was called; our engines must not need it")


@pytest.fixture(scope="module")
def engine(ray_cluster, checkpoints):
    from openrlhf.trainer.ray import vllm_engine

    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.launch import create_interpolated_vllm_engines
    from openrlhf_pilaf.utils.config_cli import parse_config

    # the way a launch script gets it: from --interp.* flags
    cfg = parse_config(
        InterpolatedEngineConfig,
        ["--interp.reference_path", str(checkpoints["reference"]), "--interp.logprobs", "sampled"],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vllm_engine, "create_vllm_engines", _forbidden)
        engines = create_interpolated_vllm_engines(
            cfg,
            pretrain=str(checkpoints["policy"]),
            num_engines=1,
            tensor_parallel_size=1,
            seed=0,
            full_determinism=False,
            enable_prefix_caching=True,  # a weight sync must be followed by reset_prefix_cache, as OpenRLHF does
            enforce_eager=True,
            max_model_len=256,
            gpu_memory_utilization=0.5,
            # fp32 for exact comparison; full-vocabulary log-probs for the probe; 4 slots so requests join mid-flight
            engine_kwargs={"dtype": "float32", "max_logprobs": -1, "max_num_seqs": 4},
        )
    ray_cluster.get(engines[0].get_num_unfinished_requests.remote())  # raises if the engine failed to start
    return engines[0]


@pytest.fixture(scope="module")
def tokenizer(checkpoints):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoints["policy"])


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _prompts(tokenizer, n: int) -> list[str]:
    from openrlhf_pilaf.testing.tiny_models import synthetic_prompts

    return [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        for p in synthetic_prompts(n)
    ]


def _worker_rpc(ray, engine, method: str):
    """Call a method of our worker extension through the rollout actor's AsyncLLM (the actor exposes no
    generic RPC); `__ray_call__` runs outside the actor's event loop, so the call is scheduled onto it."""

    def call(actor, method):
        loop = actor.llm.output_handler.get_loop()
        return asyncio.run_coroutine_threadsafe(actor.llm.collective_rpc(method), loop).result(timeout=120)

    return ray.get(engine.__ray_call__.remote(call, method))[0]


def _rollout_errors(ray, engine, tokenizer, policy_hf, reference_hf) -> tuple[float, int]:
    """generate_responses for every (prompt, w), n=2 each, all in flight together; max |log-prob - exact|."""
    from vllm import SamplingParams

    jobs = [(p, w) for p in _prompts(tokenizer, 3) for w in MIXED_W]
    refs = [
        engine.generate_responses.remote(
            prompt,
            None,
            SamplingParams(temperature=1.0, max_tokens=MAX_NEW_TOKENS, logprobs=0, extra_args={W_KEY: w}),
            256,
            tokenizer,
            num_samples=2,
        )
        for prompt, w in jobs
    ]
    worst, checked = 0.0, 0
    for (_, w), group in zip(jobs, ray.get(refs), strict=True):
        for out in group:
            ((start, end),) = out["action_ranges"]
            tokens = out["observation_tokens"]
            assert len(out["rollout_log_probs"]) == end
            got = torch.tensor(out["rollout_log_probs"][start:end], dtype=torch.float64)
            exact = interpolated_logprobs(hf_logits(policy_hf, tokens), hf_logits(reference_hf, tokens), w)
            want = exact[start - 1 : end - 1].gather(-1, torch.tensor(tokens[start:end])[:, None]).squeeze(-1)
            worst = max(worst, (got - want).abs().max().item())
            checked += end - start
    return worst, checked


def _reference_probe(ray, engine, tokenizer) -> torch.Tensor:
    """Full-vocabulary log-probs of greedy w = -1 decoding (the reference alone)."""
    from vllm import SamplingParams

    ids = tokenizer("<s><|user|>A probe only used here.</s><|assistant|>", add_special_tokens=False).input_ids
    params = SamplingParams(temperature=0.0, max_tokens=4, logprobs=-1, extra_args={W_KEY: -1.0})
    out = ray.get(engine.generate.remote(ids, params)).outputs[0]
    return torch.tensor([[lp.logprob for _, lp in sorted(step.items())] for step in out.logprobs])


def test_rollout_logprobs_follow_each_requests_w(ray_cluster, engine, tokenizer, checkpoints):
    worst, checked = _rollout_errors(
        ray_cluster, engine, tokenizer, _hf(checkpoints["policy"]), _hf(checkpoints["reference"])
    )
    print(f"Ray rollout, mixed w: {checked} tokens, max |log-prob - exact| = {worst:.2e}")
    assert checked >= len(MIXED_W) * 3 * 2
    assert worst < LOGPROB_TOL, worst


def test_weight_sync_updates_the_policy_half_only(ray_cluster, engine, tokenizer, checkpoints):
    from openrlhf_pilaf.engines.weight_sync import broadcast_weights, init_weight_sync_group

    reference_hf = _hf(checkpoints["reference"])
    before = _worker_rpc(ray_cluster, engine, "pilaf_weight_fingerprints")
    probe_before = _reference_probe(ray_cluster, engine, tokenizer)

    group = init_weight_sync_group([engine], "cpu")
    new_policy = _hf(checkpoints["policy_alt"])
    assert broadcast_weights([engine], group, new_policy.named_parameters()) == len(list(new_policy.parameters()))
    ray_cluster.get(engine.reset_prefix_cache.remote())  # cached KV blocks hold the old policy's keys and values

    after = _worker_rpc(ray_cluster, engine, "pilaf_weight_fingerprints")
    assert after["reference"] == before["reference"]  # same bytes, same packed CPU kernels
    assert after["policy"]["tensors_sha256"] != before["policy"]["tensors_sha256"]
    assert after["policy"]["cpu_kernels_sha256"] != before["policy"]["cpu_kernels_sha256"]
    # Greedy w = -1 decoding still gives the reference's log-probs. Not bit for bit: the row is computed
    # as h_policy + (-1) * (h_policy - h_ref) in float32, whose rounding depends on the policy's logits.
    probe_after = _reference_probe(ray_cluster, engine, tokenizer)
    assert torch.equal(torch.isneginf(probe_after), torch.isneginf(probe_before))
    finite = torch.isfinite(probe_before)
    drift = (probe_after[finite] - probe_before[finite]).abs().max().item()
    print(f"w = -1 probe, before vs after the sync: max |diff| = {drift:.2e}")
    assert drift < 1e-4, drift

    worst, checked = _rollout_errors(ray_cluster, engine, tokenizer, new_policy, reference_hf)
    print(f"after the sync: {checked} tokens, max |log-prob - exact(new policy, old reference)| = {worst:.2e}")
    assert worst < LOGPROB_TOL, worst
    stale, _ = _rollout_errors(ray_cluster, engine, tokenizer, _hf(checkpoints["policy"]), reference_hf)
    assert stale > 0.1  # and no longer the old policy


def test_generation_interface_over_rollout_actors(ray_cluster, engine, tokenizer, checkpoints):
    """RayVllmGenerationEngine: a mixed plan through OpenRLHF's SamplesGenerator and rollout actor, then its own
    weight sync back to the original policy (the previous test left policy_alt in the engine)."""
    from openrlhf_pilaf.engines.interface import GenerationParams, GenerationPlan
    from openrlhf_pilaf.engines.vllm_interp.generation import RayVllmGenerationEngine

    policy_hf, reference_hf = _hf(checkpoints["policy"]), _hf(checkpoints["reference"])
    ours = RayVllmGenerationEngine(
        [engine],
        tokenizer=tokenizer,
        max_len=256,
        logprobs="sampled",
        scorers={"policy": policy_hf},
        pad_token_id=tokenizer.pad_token_id,
        min_new_tokens=0,  # the sampled log-probs of z(w) itself (min_tokens would mask EOS at the first token)
        waves=True,
    )
    assert ours.update_policy(policy_hf.named_parameters()) == len(list(policy_hf.parameters()))
    texts = _prompts(tokenizer, 2)
    prompts = [tokenizer(p, add_special_tokens=False).input_ids for p in texts]
    plan = GenerationPlan.grid(prompts, MIXED_W, texts)
    samples = ours.generate(plan, GenerationParams(max_new_tokens=6, reference_logprobs=False))
    assert [(s.prompt, s.w) for s in samples] == [(x.prompt, x.w) for x in plan.samples]
    worst = 0.0
    for s in samples:
        seq = s.prompt_ids + s.token_ids
        exact = interpolated_logprobs(hf_logits(policy_hf, seq), hf_logits(reference_hf, seq), s.w)
        want = exact[len(s.prompt_ids) - 1 : -1].gather(-1, torch.tensor(s.token_ids)[:, None]).squeeze(-1)
        worst = max(worst, (torch.tensor(s.sampled_logprobs, dtype=torch.float64) - want).abs().max().item())
        assert s.reference_logprobs is None and len(s.policy_logprobs) == len(s.token_ids)  # filled by the scorer
        # two waves (w = 0 rows first): a w = 0 row's steps never ran the reference half; +1 policy: the scorer
        assert s.forwards_run == (1 + bool(s.token_ids), int(s.w != 0)), (s.w, s.forwards_run)
    print(f"generation interface over the Ray actor, after its own sync: max |log-prob - exact| = {worst:.2e}")
    assert worst < LOGPROB_TOL, worst
