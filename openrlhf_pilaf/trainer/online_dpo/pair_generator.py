"""`PairSamplesGenerator`: OpenRLHF's `SamplesGenerator`, dispatching each response at its own w.

OpenRLHF's generator sends every prompt to a rollout engine with one `SamplingParams` for the whole
batch. A pair sampler needs a weight w per response (0 the policy, -1 the reference, +-w PILAF's
pi_plus / pi_minus), so this subclass overrides the dispatch: one `generate_responses` call per
(prompt, w) group of the plan, with `extra_args={"pilaf_w": w}` and `num_samples` the draws at that w,
spread over the engines by their unfinished requests as OpenRLHF does. Everything else is OpenRLHF's:
prompt collection, the progress bar and waiting on the engines (`_generate_vllm`), and the rollout
actor's own executor (tokenisation, max_length, rollout log-probs).

The engines run in the "policy" log-probs mode, so each token's rollout log-prob is the policy's own
at temperature 1 (vllm_interp/semantics.py); the reference's come from OpenRLHF's reference actors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from types import SimpleNamespace

from openrlhf_pilaf.engines.interface import GeneratedSample, GenerationParams, GenerationPlan
from openrlhf_pilaf.engines.vllm_interp.names import W_KEY


def _openrlhf_samples_generator():
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

    return SamplesGenerator


def make_pair_generator(tokenizer, vllm_engines: Sequence, *, max_len: int):
    """A PairSamplesGenerator over OpenRLHF rollout engines (built lazily: OpenRLHF imports vLLM and Ray)."""

    class PairSamplesGenerator(_openrlhf_samples_generator()):
        """generate(plan, params, texts) -> one GeneratedSample per plan entry, in plan order."""

        def __init__(self) -> None:
            # SamplesGenerator reads strategy.args.vllm.enable_sleep and args.rollout; nothing else here.
            args = SimpleNamespace(vllm=SimpleNamespace(enable_sleep=False), rollout=SimpleNamespace(batch_size=0))
            super().__init__(SimpleNamespace(args=args), None, None, tokenizer, list(vllm_engines))
            self.max_len = max_len

        def _dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
            import ray
            from vllm import SamplingParams

            params: GenerationParams = generate_kwargs["params"]
            pending = ray.get([e.get_num_unfinished_requests.remote() for e in self.vllm_engines])
            refs = []
            for text, key in zip(prompts, labels, strict=True):
                _, w, count = key
                i = min(range(len(pending)), key=pending.__getitem__)
                pending[i] += count
                sampling = SamplingParams(
                    n=1,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    top_k=params.top_k if params.top_k > 0 else -1,
                    max_tokens=params.max_new_tokens,
                    min_tokens=1,
                    skip_special_tokens=False,
                    logprobs=0,
                    extra_args={W_KEY: float(w)},
                )
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

        def generate(
            self, plan: GenerationPlan, params: GenerationParams, texts: Sequence[str]
        ) -> list[GeneratedSample]:
            if len(texts) != len(plan.prompts):
                raise ValueError(f"{len(plan.prompts)} prompts but {len(texts)} prompt texts")
            groups: dict[tuple[int, float], list[int]] = defaultdict(list)
            for j, spec in enumerate(plan.samples):
                groups[(spec.prompt, float(spec.w))].append(j)
            keys = [(p, w, len(js)) for (p, w), js in groups.items()]
            batch = (["default"] * len(keys), [texts[p] for p, _, _ in keys], keys, [None] * len(keys))
            responses, _, _ = self._generate_vllm(
                dataloader_iter=_once(batch), num_prompts=len(keys), dynamic_filtering=False, params=params
            )
            by_key: dict[tuple[int, float], list[dict]] = defaultdict(list)
            for r in responses:
                p, w, _ = r["label"]
                by_key[(p, w)].append(r)
            out: list[GeneratedSample | None] = [None] * len(plan.samples)
            for (p, w), js in groups.items():
                got = by_key[(p, w)]
                if len(got) != len(js):
                    raise RuntimeError(
                        f"prompt {p} at w={w}: asked for {len(js)} responses, the engines returned {len(got)}"
                    )
                for j, r in zip(js, got, strict=True):
                    out[j] = _to_sample(plan, p, w, r)
            return out  # type: ignore[return-value]

    return PairSamplesGenerator()


def _once(batch) -> Iterator:
    yield batch


def _to_sample(plan: GenerationPlan, prompt: int, w: float, response: dict) -> GeneratedSample:
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
    return GeneratedSample(
        prompt=prompt,
        w=w,
        prompt_ids=prompt_ids,
        token_ids=obs[start:end],
        finish_reason="length" if response.get("truncated") else "stop",
        policy_logprobs=[float(v) for v in lps[start:end]],
    )
