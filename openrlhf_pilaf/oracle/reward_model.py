"""Scorers over a reward model checkpoint, loaded by OpenRLHF's own `get_llm_for_sequence_regression`.

- `RewardModelScorer`: the model in this process (the `--engine torch` path), left-padded batches.
- `RayRewardModelScorer`: OpenRLHF's `RewardModelActor` group, the way its experience maker calls it
  (one [1, T] sequence per item, sharded over the group's ranks).
Both score the prompt and response token ids themselves (the reward model shares the policy's tokenizer;
the launcher checks that), so nothing is lost to decoding and re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from openrlhf_pilaf.oracle.scorers import ScoreRequest, ScorerError
from openrlhf_pilaf.utils.sequences import left_pad_with_action_mask


def load_reward_model(path: str, *, param_dtype: str, attn_implementation: str, normalize: bool, device: str):
    from openrlhf.models import get_llm_for_sequence_regression

    model = get_llm_for_sequence_regression(
        path,
        "reward",
        param_dtype=param_dtype,
        normalize_reward=normalize,
        attn_implementation=attn_implementation,
        value_head_prefix="score",
    )
    return model.to(device).eval()


class RewardModelScorer:
    def __init__(self, model: torch.nn.Module, pad_token_id: int, batch_size: int = 16) -> None:
        self.model, self.pad_token_id, self.batch_size = model, pad_token_id, batch_size
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            seqs = [list(r.prompt_ids) + list(r.response_ids) for r in chunk]
            ids, attention, _ = left_pad_with_action_mask(seqs, [len(r.prompt_ids) for r in chunk], self.pad_token_id)
            rewards = self.model(ids.to(self.device), attention_mask=attention.to(self.device))
            out.extend(float(v) for v in rewards.float().cpu())
        return out


class RayRewardModelScorer:
    """OpenRLHF's RewardModelActor group (`RayActorGroup`), called as its experience maker calls it."""

    def __init__(self, group) -> None:
        self.group = group

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        import ray

        seqs = [torch.tensor([list(r.prompt_ids) + list(r.response_ids)], dtype=torch.long) for r in requests]
        masks = [torch.ones_like(s) for s in seqs]
        try:
            refs = self.group.async_run_method_batch(method_name="forward", sequences=seqs, attention_mask=masks)
            chunks = ray.get(refs)
        except ray.exceptions.RayError as e:
            raise ScorerError(f"reward model actor failed: {e}") from e
        duplicate = getattr(self.group, "duplicate_actors", 1)
        rewards = [float(r) for chunk in chunks[::duplicate] for item in chunk for r in item.flatten()]
        return rewards
