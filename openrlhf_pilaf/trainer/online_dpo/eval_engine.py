"""An engine that samples a checkpoint's own responses for an evaluation, with both log-probs from one forward.

`build_eval_engine` starts what `cli.evaluate --engine torch|vllm` samples with, from paths alone (no
run config): an engine of the generation interface, the `MatchedLogprobs` that
sets both log-probs (None where the engine returns both), the decoding settings, and how to release it.

- torch: the PyTorch interpolated engine (policy + reference, Hugging Face models) samples, seeded per
  call (`GenerationParams.seed`); both log-probs are then recomputed by teacher-forced forwards of its
  two models (`torch_engine_logprobs`): its decode gives a w = 0 row the policy's log-probs from the KV-cache
  decode and the reference's from a teacher-forced forward, two orders of float operations that differ by
  ~1e-4 nats a token and would not cancel (a policy against itself would not have KL exactly 0).
- vllm: an offline interpolated `vllm.LLM` samples (seeded when created); both log-probs are then
  recomputed by teacher-forced Hugging Face forwards of the policy and the reference
  (`engines.scoring.teacher_forced_logprobs`), since vLLM's own differ from a forward by kernel noise that
  would not cancel against the reference's (docs/interpolation.md, "The evaluation KL").
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.kl import MatchedLogprobs


def default_device() -> str:
    """cuda where there is one, else cpu (the CPU stack)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


class PlanEngine:
    """An engine of the generation interface that can be released (`close`) when the evaluation is done."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        return self.engine.generate(plan, params)

    def close(self) -> None:
        self.engine = None


class OfflineVllmEngine(PlanEngine):
    """An offline interpolated vLLM engine; `close` shuts its engine core down (its memory back to the process)."""

    def __init__(self, engine: Any, llm: Any) -> None:
        super().__init__(engine)
        self.llm = llm

    def close(self) -> None:
        if self.llm is not None:
            self.llm.llm_engine.engine_core.shutdown()
        self.llm = self.engine = None
        gc.collect()


@dataclass
class EvalEngine:
    """What an evaluation samples with: `run_policy_evaluation(engine, logprobs, ..., params)`, then `close()`."""

    engine: PlanEngine
    logprobs: MatchedLogprobs | None
    params: GenerationParams

    def close(self) -> None:
        self.engine.close()


def load_causal_lms(model: str, ref: str, device: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The Hugging Face policy and reference for teacher-forced log-probs, in bf16 on CUDA and float32 on the CPU;
    one model (the same object twice) when both paths are one checkpoint, so that its KL is exactly 0."""
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32

    def load(path: str) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()

    policy = load(model)
    same = Path(model).resolve() == Path(ref).resolve()
    return policy, policy if same else load(ref)


def torch_engine_logprobs(engine: Any, *, reference_is_policy: bool = False) -> MatchedLogprobs:
    """Both evaluation log-probs of a `TorchInterpolatedEngine`'s samples from teacher-forced forwards of its policy
    and its reference over the same batches, over the engine's shared vocabulary (what its decode normalises over).

    `reference_is_policy` (one checkpoint on both sides): the policy's rows are reused, so the KL is exactly 0 by
    construction. Otherwise two identical models would give equal rows too (the same forward on the same batches),
    but the reuse does not depend on the kernels being deterministic.
    """
    from openrlhf_pilaf.engines.scoring import teacher_forced_logprobs

    reference = engine.policy if reference_is_policy else engine.reference
    return teacher_forced_logprobs(
        engine.policy, reference, pad_token_id=engine.pad_token_id, vocab_size=engine.vocab_size
    )


def build_eval_engine(
    kind: Literal["torch", "vllm"],
    *,
    model: str,
    ref: str,
    pad_token_id: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    max_model_len: int,
    device: str | None = None,
    gpu_memory_utilization: float | None = None,
    max_batch_size: int = 64,
) -> EvalEngine:
    """Start the engine of an evaluation of `model` against `ref` (local checkpoints, same tokenizer: the caller
    checks). `max_model_len`: prompt + response tokens (vLLM's). `gpu_memory_utilization` (vllm): vLLM's share
    of GPU memory, default 0.5 on CUDA so that the Hugging Face models of the log-probs fit next to it, vLLM's
    own default on the CPU stack."""
    device = default_device() if device is None else device
    if kind == "torch":
        from openrlhf_pilaf.engines.torch_engine import TorchInterpolatedEngine

        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        engine = TorchInterpolatedEngine.from_pretrained(
            model, ref, device=device, dtype=dtype, max_batch_size=max_batch_size
        )
        # The engine only samples (the policy decodes alone at w = 0); the log-probs come from `logprobs`.
        params = GenerationParams(
            max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, reference_logprobs=False
        )
        same = Path(model).resolve() == Path(ref).resolve()
        return EvalEngine(PlanEngine(engine), torch_engine_logprobs(engine, reference_is_policy=same), params)
    if kind != "vllm":
        raise ValueError(f"engine must be 'torch' or 'vllm', got {kind!r}")

    from vllm import LLM

    from openrlhf_pilaf.engines.scoring import teacher_forced_logprobs
    from openrlhf_pilaf.engines.vllm_interp.config import InterpolatedEngineConfig
    from openrlhf_pilaf.engines.vllm_interp.generation import VllmGenerationEngine

    if device != "cuda":
        from openrlhf_pilaf.utils.cpu_stack import configure_cpu_stack, default_cache_dir

        configure_cpu_stack(default_cache_dir())
    interp = InterpolatedEngineConfig(reference_path=ref, logprobs="policy")
    kwargs: dict[str, Any] = {}
    if gpu_memory_utilization is None and device == "cuda":
        gpu_memory_utilization = 0.5
    if gpu_memory_utilization is not None:
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
    # vLLM first: on CUDA it sizes its cache from the free memory, which the Hugging Face models would take.
    llm = LLM(
        model=model,
        dtype="bfloat16" if device == "cuda" else "float32",
        enforce_eager=device != "cuda",
        max_model_len=max_model_len,
        seed=seed,
        **kwargs,
        **interp.engine_kwargs(model),
    )
    engine = OfflineVllmEngine(VllmGenerationEngine(llm, logprobs="policy"), llm)
    try:
        policy, reference = load_causal_lms(model, ref, device)
    except BaseException:
        engine.close()
        raise
    # vLLM engines are seeded at creation; the reference log-probs come from `logprobs`, not from the engine.
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature, reference_logprobs=False)
    return EvalEngine(engine, teacher_forced_logprobs(policy, reference, pad_token_id=pad_token_id), params)
