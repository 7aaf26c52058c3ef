"""The demo's task: a hidden gold reward computed exactly from the response text (a known oracle).

Why a rule and not a reward model: with a rule, the reward of a policy is an exact function of its
responses, so the demo's reward, KL and J are Monte Carlo estimates with stated errors of the true
quantities, not one model's guess about another. The rule is a fixed value per word of the tiny
factory's little language (`openrlhf_pilaf.testing.tiny_models`: subjects, verbs, objects, extras),
minus a length term that penalises rambling and truncation, so a policy improves it by choosing other
words (which object, which adverbial ending) at the same sentence length.

Scale: two sensible sentences of the SFT'd policy differ by ~0.5-3 units, so Bradley-Terry labels
(P(a > b) = sigmoid(r_a - r_b)) are informative but noisy, as human labels are.

Two tasks share the language and differ in the rule (`TASKS`):
- `words`: the word values above minus the length term. Its values are multiples of 0.5, so about 30% of
  the SFT policy's pairs tie and their Bradley-Terry label is a coin flip.
- `fine`: continuous and prompt-dependent. Each word's value is shifted by a fixed pseudo-random amount that
  depends on the prompt's own words (`FINE_JITTER`, from a hash, so exact and reproducible), and the i-th
  word of the response is weighted by `1 / (1 + FINE_DECAY * i)`. Two different responses almost never tie,
  so nearly every label carries signal; the ordering of words by value stays close to `words`' on average,
  so the SFT policy and the prompts serve both.

OpenRLHF serves it through its own rule-reward mechanism: `--reward.remote_url reward.py` whose
`reward_func(queries, prompts, labels)` returns {"rewards": ...}; `write_reward_file` writes that file,
delegating here so the rule lives in one place.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

# The value of each word of the little language (lower case). Function words are neutral; content words
# carry the preference: living subjects and making/helping verbs a little up, eating and counting down,
# flowers / houses / stories up, stones and numbers down; calm endings up, hurried ones down.
WORD_VALUES: dict[str, float] = {
    # function words
    "the": 0.0,
    "a": 0.0,
    "an": 0.0,
    "my": 0.0,
    "in": 0.0,
    "at": 0.0,
    "with": 0.0,
    # subjects
    "cat": 0.5,
    "dog": 0.0,
    "friend": 0.5,
    "robot": -0.5,
    "small": 0.0,
    "bird": 0.5,
    "teacher": 0.0,
    "she": 0.0,
    "we": 0.5,
    # verbs
    "sees": 0.0,
    "likes": 0.5,
    "eats": -1.0,
    "finds": 0.5,
    "builds": 1.0,
    "paints": 1.0,
    "reads": 0.5,
    "follows": -0.5,
    "helps": 1.0,
    "counts": -1.0,
    # objects
    "apple": 0.0,
    "ball": -0.5,
    "red": 0.5,
    "box": -0.5,
    "seven": -0.5,
    "stones": -1.0,
    "old": -0.5,
    "book": 0.5,
    "tiny": 0.5,
    "house": 1.0,
    "river": 0.5,
    "blue": 0.5,
    "flowers": 1.5,
    "long": 0.0,
    "story": 1.0,
    "numbers": -1.5,
    # extras
    "today": 0.5,
    "slowly": -0.5,
    "joy": 1.5,
    "park": 1.0,
    "night": -0.5,
    "again": -1.0,
    "quickly": -1.0,
}

#: A word outside the little language (digits, fragments of words, repeated prompts) costs this much.
UNKNOWN_WORD_VALUE = -1.0
#: The length term: -LENGTH_COST * |words - TARGET_WORDS|; 6 words is a typical full sentence.
TARGET_WORDS = 6
LENGTH_COST = 0.5

# Special tokens of the factory's tokenizer (tiny_models.SPECIAL_TOKENS); the response ends at EOS.
_ASSISTANT = "<|assistant|>"
_EOS = "</s>"
_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>")
_WORD = re.compile(r"[a-z0-9']+")


#: The demo's gold rules (see the module docstring); `words` is the default.
TASKS: tuple[str, ...] = ("words", "fine")
#: `fine`: the largest prompt-dependent shift of a word's value, and the decay of the weight by position.
FINE_JITTER = 0.75
FINE_DECAY = 0.1


def words(response: str) -> list[str]:
    """The response's words, lower case, punctuation dropped (what the rule scores)."""
    return _WORD.findall(response.lower())


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown demo task {task!r}; choose from {', '.join(TASKS)}")
    return task


def prompt_key(prompt: str) -> str:
    """What of a prompt the `fine` rule depends on: its words, chat-template tokens dropped (so the raw question
    and the templated prompt OpenRLHF passes to `reward_func` give the same key)."""
    for tok in _SPECIALS:
        prompt = prompt.replace(tok, " ")
    return " ".join(words(prompt))


@lru_cache(maxsize=65536)
def fine_shift(key: str, word: str) -> float:
    """The `fine` rule's shift of `word`'s value for prompts with `key`: uniform in [-FINE_JITTER, FINE_JITTER],
    from SHA-256 of (key, word), so it is exact and the same on every machine."""
    digest = hashlib.sha256(f"{key}\x00{word}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
    return FINE_JITTER * (2.0 * unit - 1.0)


def gold_reward(response: str, prompt: str = "", task: str = "words") -> float:
    """The hidden reward of a response text to `prompt` under `task` (`TASKS`). Exact, deterministic.

    words: sum of the word values minus the length term (the prompt does not matter).
    fine: sum over positions i of (value + fine_shift(prompt, word)) / (1 + FINE_DECAY * i), minus the same
    length term.
    """
    ws = words(response)
    length_term = LENGTH_COST * abs(len(ws) - TARGET_WORDS)
    if check_task(task) == "words":
        return float(sum(WORD_VALUES.get(w, UNKNOWN_WORD_VALUE) for w in ws) - length_term)
    key = prompt_key(prompt)
    value = sum(
        (WORD_VALUES.get(w, UNKNOWN_WORD_VALUE) + fine_shift(key, w)) / (1.0 + FINE_DECAY * i) for i, w in enumerate(ws)
    )
    return float(value - length_term)


def response_of(query: str, prompt: str) -> str:
    """The response inside OpenRLHF's query (prompt and response decoded together, special tokens kept).

    With the factory's chat template the prompt ends with the one `<|assistant|>` of a single turn, so
    the response is what follows it; otherwise the query starts with the prompt. The response ends at its
    first EOS (anything after is padding), and stray special tokens are not words.
    """
    if query.startswith(prompt):
        response = query[len(prompt) :]
    elif _ASSISTANT in query:
        response = query.split(_ASSISTANT, 1)[1]
    else:
        raise ValueError(f"the query does not contain its prompt: {query[:80]!r} / {prompt[:80]!r}")
    response = response.split(_EOS, 1)[0]
    for tok in _SPECIALS:
        response = response.replace(tok, " ")
    return response


def reward_func(
    queries: Sequence[str], prompts: Sequence[str], labels: Sequence | None = None, task: str = "words"
) -> dict:
    """OpenRLHF's rule-reward interface (`--reward.remote_url file.py`): {"rewards": [...], ...} per query."""
    import torch

    if len(queries) != len(prompts):
        raise ValueError(f"reward_func got {len(queries)} queries and {len(prompts)} prompts")
    rewards = torch.tensor(
        [gold_reward(response_of(q, p), p, task) for q, p in zip(queries, prompts, strict=True)], dtype=torch.float32
    )
    # OpenRLHF's executor reads "rewards" (and "scores"/"extra_logs" when present): give all three.
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"gold_reward": rewards}}


_REWARD_FILE = '''"""The demo's gold reward ({task!r} task) for `--reward.remote_url` (demo.task.write_reward_file)."""

from openrlhf_pilaf.demo.task import reward_func as _gold


def reward_func(queries, prompts, labels):
    return _gold(queries, prompts, labels, task={task!r})
'''


def write_reward_file(path: str | Path, task: str = "words") -> Path:
    """Write the `.py` with `reward_func` that OpenRLHF loads for `--reward.remote_url`; it delegates here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_REWARD_FILE.format(task=check_task(task)))
    return path
