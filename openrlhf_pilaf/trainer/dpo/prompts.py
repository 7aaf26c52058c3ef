"""The prompt stream: OpenRLHF's dataset loading and prompt formatting, in an order a checkpoint can resume.

Prompts come from OpenRLHF's `blending_datasets` and `PromptDataset` (so `--data.input_key`,
`--data.apply_chat_template`, `--data.input_template` and `--data.label_key` mean what they mean in
OpenRLHF), read and checked by `utils.dataset_checks` first (a key flag naming no column is refused,
listing the keys the rows have, before any engine starts). The order is a permutation per episode drawn
from (seed, episode), so the stream position is two integers, saved with every checkpoint and restored
exactly on resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from openrlhf_pilaf.utils.dataset_checks import DatasetError, DatasetSource, check_row_keys, load_rows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prompt:
    text: str
    label: Any
    ids: tuple[int, ...]


# The key flags of every launcher's `--data.*` group (OpenRLHF's spelling too).
KEY_FLAGS = {"input_key": "--data.input_key", "label_key": "--data.label_key"}


def read_prompt_rows(strategy, source: DatasetSource, *, max_samples: int, seed: int):
    """The rows of `source` (OpenRLHF's blending_datasets), refused naming the flag when they cannot give prompts.

    Refused here, before any engine starts: a dataset that cannot be read or has no rows, and a key flag
    (`--data.input_key`, `--data.label_key`) naming no column of the rows (the message lists the keys they have).
    """
    data_args = strategy.args.data
    rows = load_rows(source, strategy, max_samples=max_samples, seed=seed)
    keys = {flag: getattr(data_args, name, None) for name, flag in KEY_FLAGS.items()}
    check_row_keys(rows, keys, source=source, prompt_flag=KEY_FLAGS["input_key"])
    return rows


def prompts_from_rows(
    rows, tokenizer, strategy, *, source: DatasetSource, max_prompt_len: int, budget: str
) -> list[Prompt]:
    """Format and tokenise `rows` as OpenRLHF's PPO trainer does; skip prompts longer than `max_prompt_len` tokens.

    `budget` says which flags give `max_prompt_len` (e.g. "--data.max_len 64 - --rollout.max_new_tokens 8").
    """
    from openrlhf.datasets import PromptDataset

    ds = PromptDataset(rows, tokenizer, strategy, input_template=strategy.args.data.input_template)
    prompts = []
    too_long = 0
    for i in range(len(ds)):
        _, text, label, _ = ds[i]
        ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not ids:
            raise DatasetError(
                f"{source.flag} {source.value!r}: prompt {i} is empty after formatting (--data.input_key, "
                "--data.input_template)"
            )
        if len(ids) > max_prompt_len:
            too_long += 1
            continue
        prompts.append(Prompt(text, label, ids))
    if too_long:
        logger.warning(
            "%s: skipped %d prompts longer than %d tokens (%s)", source.value, too_long, max_prompt_len, budget
        )
    if not prompts:
        raise DatasetError(
            f"{source.flag} {source.value!r}: all {too_long} prompts are longer than {max_prompt_len} tokens "
            f"({budget}): raise the first or lower the second"
        )
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
