"""From two scores to a label, reproducibly.

Each pair gets its own generator seeded by (run seed, pair_id), so a label does not depend on which
other pairs shared its scorer call, on retries, or on a resume: the same pair with the same scores is
always labelled the same way.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np


def pair_rng(seed: int, pair_id: str) -> np.random.Generator:
    digest = hashlib.sha256(pair_id.encode()).digest()
    return np.random.default_rng([int(seed), int.from_bytes(digest[:8], "little")])


def prob_a_preferred(score_a: float, score_b: float) -> float:
    """Bradley-Terry: P(a > b) = sigmoid(score_a - score_b), computed without overflow."""
    d = score_a - score_b
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


def label_pair(score_a: float, score_b: float, rule: str, rng: np.random.Generator) -> str:
    """'a' or 'b'. rule 'bt' draws from Bradley-Terry; 'argmax' takes the higher score, a tie by a fair coin."""
    if not (math.isfinite(score_a) and math.isfinite(score_b)):
        raise ValueError(f"scores must be finite, got {score_a} and {score_b}")
    u = rng.random()
    if rule == "bt":
        return "a" if u < prob_a_preferred(score_a, score_b) else "b"
    if rule == "argmax":
        if score_a != score_b:
            return "a" if score_a > score_b else "b"
        return "a" if u < 0.5 else "b"
    raise ValueError(f"unknown label rule {rule!r} (--oracle.labels: bt or argmax)")
