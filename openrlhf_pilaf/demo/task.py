"""The demo's task: a hidden gold reward computed exactly from the response text (a known oracle).

Why a rule and not a reward model: with a rule, the reward of a policy is an exact function of its
responses, so the demo's reward, KL and J are Monte Carlo estimates with stated errors of the true
quantities, not one model's guess about another. The rule is a fixed value per word of the tiny
factory's little language (`openrlhf_pilaf.testing.tiny_models`: subjects, verbs, objects, extras),
minus a length term that penalises rambling and truncation, so a policy improves it by choosing other
words (which object, which adverbial ending) at the same sentence length.

Scale: two sensible sentences of the SFT'd policy differ by ~0.5-3 units, so Bradley-Terry labels
(P(a > b) = sigmoid(r_a - r_b)) are informative but noisy, as human labels are.

OpenRLHF serves it through its own rule-reward mechanism: `--reward.remote_url reward.py` whose
`reward_func(queries, prompts, labels)` returns {"rewards": ...}; `write_reward_file` writes that file,
delegating here so the rule lives in one place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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


def words(response: str) -> list[str]:
    """The response's words, lower case, punctuation dropped (what the rule scores)."""
    return _WORD.findall(response.lower())


def gold_reward(response: str) -> float:
    """The hidden reward of a response text: sum of its word values minus the length term. Exact, deterministic."""
    ws = words(response)
    value = sum(WORD_VALUES.get(w, UNKNOWN_WORD_VALUE) for w in ws)
    return float(value - LENGTH_COST * abs(len(ws) - TARGET_WORDS))


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


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence | None = None) -> dict:
    """OpenRLHF's rule-reward interface (`--reward.remote_url file.py`): {"rewards": [...], ...} per query."""
    import torch

    if len(queries) != len(prompts):
        raise ValueError(f"reward_func got {len(queries)} queries and {len(prompts)} prompts")
    rewards = torch.tensor(
        [gold_reward(response_of(q, p)) for q, p in zip(queries, prompts, strict=True)], dtype=torch.float32
    )
    # OpenRLHF's executor reads "rewards" (and "scores"/"extra_logs" when present): give all three.
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"gold_reward": rewards}}


_REWARD_FILE = '''"""The demo's gold reward for `--reward.remote_url` (written by demo.task.write_reward_file)."""

from openrlhf_pilaf.demo.task import reward_func as _gold


def reward_func(queries, prompts, labels):
    return _gold(queries, prompts, labels)
'''


def write_reward_file(path: str | Path) -> Path:
    """Write the `.py` with `reward_func` that OpenRLHF loads for `--reward.remote_url`; it delegates here."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_REWARD_FILE)
    return path
