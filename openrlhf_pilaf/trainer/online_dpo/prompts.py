"""The prompt stream: OpenRLHF's dataset loading and prompt formatting, in an order a checkpoint can resume.

Prompts come from OpenRLHF's `blending_datasets` and `PromptDataset` (so `--data.input_key`,
`--data.apply_chat_template`, `--data.input_template` and `--data.label_key` mean what they mean in
OpenRLHF). The order is a permutation per episode drawn from (seed, episode), so the stream position
is two integers, saved with every checkpoint and restored exactly on resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    text: str
    label: Any
    ids: tuple[int, ...]


def load_prompts(
    strategy,
    tokenizer,
    dataset: str,
    *,
    probs: str | None,
    split: str,
    max_samples: int,
    seed: int,
    max_prompt_len: int,
) -> list[Prompt]:
    """Load and format prompts as OpenRLHF's PPO trainer does; refuse prompts longer than `max_prompt_len` tokens."""
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets

    data = blending_datasets(dataset, probs, strategy, seed, max_count=max_samples, dataset_split=split)
    data = data.select(range(min(max_samples, len(data))))
    ds = PromptDataset(data, tokenizer, strategy, input_template=strategy.args.data.input_template)
    prompts = []
    too_long = 0
    for i in range(len(ds)):
        _, text, label, _ = ds[i]
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise ValueError(f"{dataset}: prompt {i} is empty after formatting (--data.input_key?)")
        if len(ids) > max_prompt_len:
            too_long += 1
            continue
        prompts.append(Prompt(text, label, ids))
    if too_long:
        logger.warning(
            "%s: skipped %d prompts longer than %d tokens (--data.max_len)", dataset, too_long, max_prompt_len
        )
    if not prompts:
        raise ValueError(f"{dataset}: no usable prompts (--data.prompt_dataset, --data.max_len)")
    return prompts


class PromptStream:
    """Batches of prompts, episode after episode, each episode in its own seeded order."""

    def __init__(self, prompts: list[Prompt], *, seed: int, num_episodes: int) -> None:
        self.prompts, self.seed, self.num_episodes = prompts, seed, num_episodes
        self.episode, self.index = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, episode: int) -> np.ndarray:
        return np.random.default_rng([self.seed, episode]).permutation(len(self.prompts))

    def batches_left(self, batch_size: int) -> int:
        remaining = (self.num_episodes - self.episode) * len(self.prompts) - self.index
        return max(0, remaining // batch_size)

    def next_batch(self, batch_size: int) -> list[Prompt] | None:
        """The next `batch_size` prompts (crossing into the next episode if needed), or None when exhausted."""
        if self.batches_left(batch_size) == 0:
            return None
        out = []
        while len(out) < batch_size:
            if self.index == len(self.prompts):
                self.episode += 1
                self.index = 0
                self._order = self._permutation(self.episode)
            take = min(batch_size - len(out), len(self.prompts) - self.index)
            out.extend(self.prompts[j] for j in self._order[self.index : self.index + take])
            self.index += take
        return out

    def state_dict(self) -> dict[str, int]:
        return {"episode": self.episode, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.episode, self.index = int(state["episode"]), int(state["index"])
        self._order = self._permutation(self.episode)
