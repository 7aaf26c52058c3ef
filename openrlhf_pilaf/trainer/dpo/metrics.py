"""The numbers a DPO learner call reports (metrics.jsonl, TensorBoard, wandb): one definition for both schedules."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Collection counters that are reported with the round's first learner call (seconds and new pairs).
_COLLECTION_KEYS = ("new_pairs",)


def dpo_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Per-pair means of the learner's sums (OpenRLHF's DPOLoss and its implicit rewards)."""
    n = sums["pairs"]
    return {
        "loss": sums["loss"] / n,
        "chosen_reward": sums["chosen_reward"] / n,
        "rejected_reward": sums["rejected_reward"] / n,
        "reward_margin": (sums["chosen_reward"] - sums["rejected_reward"]) / n,
        "reward_accuracy": sums["accuracy"] / n,
    }


def pair_metrics(rows: Sequence[dict]) -> dict[str, float]:
    """What the pairs of one learner call say: the oracle's scores of chosen and rejected (when a scorer labelled
    them), the sampled policy's sequence KL log pi(y) - log pi_ref(y) on its own responses (a Monte Carlo estimate),
    and model forwards per pair."""
    out: dict[str, float] = {}
    scored = [r for r in rows if r.get("score_a") is not None and r.get("score_b") is not None]
    if scored:
        chosen = [r["score_a"] if r["label"] == "a" else r["score_b"] for r in scored]
        rejected = [r["score_b"] if r["label"] == "a" else r["score_a"] for r in scored]
        out["oracle_score_chosen"] = float(np.mean(chosen))
        out["oracle_score_rejected"] = float(np.mean(rejected))
    kl = [r[f"logp_policy_{s}"] - r[f"logp_ref_{s}"] for r in rows for s in "ab" if r[f"branch_{s}"] == "policy"]
    out["kl_policy"] = float(np.mean(kl)) if kl else math.nan
    forwards = [r.get("policy_forwards", 0) + r.get("reference_forwards", 0) for r in rows]
    out["forwards_per_pair"] = float(np.mean(forwards)) if forwards else math.nan
    return out


def collection_metrics(counters: dict[str, float]) -> dict[str, float]:
    """The round's generation and labelling costs (seconds, new pairs)."""
    return {k: v for k, v in counters.items() if k.endswith("_s") or k in _COLLECTION_KEYS}
