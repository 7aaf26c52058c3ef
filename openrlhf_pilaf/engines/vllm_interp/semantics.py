"""What the interpolated engine's numbers mean: the weight w, and which distribution log-probs describe.

vLLM returns one kind of log-prob per token, engine-wide, so the model's `compute_logits` returns the
interpolation at a fixed base weight w_base and the logits processor moves each row to its own w,
z(w) = z(w_base) + (w - w_base) * (h_policy - h_ref). `LOGPROBS_MODES` maps each mode to vLLM's
`logprobs_mode` and w_base: "policy" (raw_logprobs, 0), "sampled" (processed_logprobs, 0),
"reference" (raw_logprobs, -1). What each returns, prompt log-probs included: docs/interpolation.md,
"The three kinds of log-probs".
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from openrlhf_pilaf.engines.rules import check_w
from openrlhf_pilaf.engines.vllm_interp.names import W_KEY

LogprobsMode = Literal["policy", "sampled", "reference"]


class LogprobsSemantics(NamedTuple):
    vllm_logprobs_mode: str  # vLLM's engine argument `logprobs_mode`
    w_base: float  # the weight of the logits compute_logits returns


LOGPROBS_MODES: dict[str, LogprobsSemantics] = {
    "policy": LogprobsSemantics("raw_logprobs", 0.0),
    "sampled": LogprobsSemantics("processed_logprobs", 0.0),
    "reference": LogprobsSemantics("raw_logprobs", -1.0),
}


def semantics_of(mode: str) -> LogprobsSemantics:
    if mode not in LOGPROBS_MODES:
        raise ValueError(f"logprobs mode {mode!r} is not one of {list(LOGPROBS_MODES)}")
    return LOGPROBS_MODES[mode]


def request_w(extra_args: dict | None, default: float) -> float:
    """The w of one request: `SamplingParams.extra_args[W_KEY]`, or the engine's default when absent."""
    if not extra_args or W_KEY not in extra_args:
        return default
    return check_w(extra_args[W_KEY], f"SamplingParams.extra_args[{W_KEY!r}]")
