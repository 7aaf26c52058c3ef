"""From a batch of prompts to candidate pairs, and from candidate pairs to labelled pair-log rows.

The DPO driver calls it for each generation batch of a round (online DPO: the round is one batch).
Only the pairs whose ids are not on disk yet are generated: the sampler's plan is drawn for the
whole batch from its seeded generator and then restricted to them, so a resumed batch makes the same
choices for the pairs it still needs.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import numpy as np

from openrlhf_pilaf.engines.interface import GenerationEngine, GenerationParams, GenerationPlan
from openrlhf_pilaf.oracle import PreferenceOracle, ScoreRequest
from openrlhf_pilaf.pairs import pair_row
from openrlhf_pilaf.pairs.log import candidate_row
from openrlhf_pilaf.pairs.types import CandidatePair
from openrlhf_pilaf.samplers import PairSampler, SamplerPlan, model_forwards
from openrlhf_pilaf.trainer.dpo.prompts import Prompt

# Generated tokens times model passes: as the engines ran them, and as sampling at each row's w needs them
# (`samplers.model_forwards`: no reference at w = 0, no policy at w = -1; the paper's cost table).
TOKEN_COUNTERS = ("policy_tokens", "reference_tokens", "policy_tokens_needed", "reference_tokens_needed")


def subset_plan(plan: SamplerPlan, groups: Sequence[int]) -> SamplerPlan:
    """The plan restricted to some prompt groups (those not yet in the pair log), sample indices renumbered."""
    specs, kept = [], []
    for g in groups:
        group = plan.groups[g]
        start = len(specs)
        specs.extend(plan.generation.samples[i] for i in group.sample_indices)
        kept.append(dataclasses.replace(group, sample_indices=tuple(range(start, len(specs)))))
    return SamplerPlan(GenerationPlan(plan.generation.prompts, specs, plan.generation.texts), tuple(kept))


class PairCollector:
    """Generates candidate pairs through an engine of the generation interface and labels them."""

    def __init__(self, engine: GenerationEngine | None, tokenizer, gen_params: GenerationParams | None) -> None:
        self.engine, self.tokenizer, self.gen_params = engine, tokenizer, gen_params

    def text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def request(self, prompt: Prompt, response_ids: Sequence[int]) -> ScoreRequest:
        query = self.tokenizer.decode(list(prompt.ids) + list(response_ids), skip_special_tokens=False)
        return ScoreRequest(query, prompt.text, prompt.label, prompt.ids, tuple(response_ids))

    def candidates(
        self,
        sampler: PairSampler,
        rng: np.random.Generator,
        batch: Sequence[Prompt],
        pair_ids: Sequence[str],
        todo: Sequence[int],
        *,
        step: int,
    ) -> tuple[list[CandidatePair], dict[str, float]]:
        """Candidate pairs of the prompts `todo` (indices into batch), and cost counters (tokens, seconds)."""
        counters = dict.fromkeys(TOKEN_COUNTERS, 0.0) | {"new_pairs": float(len(todo))}
        if not todo:
            return [], counters
        plan = subset_plan(sampler.plan([p.ids for p in batch], rng), todo)
        generation = dataclasses.replace(plan.generation, texts=[p.text for p in batch])
        t0 = time.perf_counter()
        samples = self.engine.generate(generation, self.gen_params)
        counters["generate_s"] = time.perf_counter() - t0  # the reference's log-probs included
        for s in samples:
            needed = model_forwards(s.w)
            ran = s.forwards_run if s.forwards_run is not None else needed  # an engine that does not say
            counters["policy_tokens"] += ran[0] * len(s.token_ids)
            counters["reference_tokens"] += ran[1] * len(s.token_ids)
            counters["policy_tokens_needed"] += needed[0] * len(s.token_ids)
            counters["reference_tokens_needed"] += needed[1] * len(s.token_ids)
        pairs = sampler.pairs(plan, samples, step=step, pair_ids=[pair_ids[i] for i in todo])
        return [dataclasses.replace(p, prompt=batch[p.prompt_index].text) for p in pairs], counters

    def candidate_row(self, pair: CandidatePair, sampler_name: str) -> dict:
        return candidate_row(
            pair, sampler=sampler_name, response_a=self.text(pair.a.token_ids), response_b=self.text(pair.b.token_ids)
        )

    def label(
        self, oracle: PreferenceOracle, pairs: Sequence[CandidatePair], batch: Sequence[Prompt], sampler_name: str
    ) -> Iterator[dict]:
        """Pair-log rows, yielded one by one as the oracle labels them (the caller logs each at once)."""
        requests = [
            (self.request(batch[p.prompt_index], p.a.token_ids), self.request(batch[p.prompt_index], p.b.token_ids))
            for p in pairs
        ]
        for labelled in oracle.iter_labels(pairs, requests):
            p = labelled.pair
            yield pair_row(
                labelled,
                sampler=sampler_name,
                response_a=self.text(p.a.token_ids),
                response_b=self.text(p.b.token_ids),
            )
