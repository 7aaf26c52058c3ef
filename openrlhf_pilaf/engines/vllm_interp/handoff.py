"""The hand-off from the model's `compute_logits` to the logits processor, checked at every step.

vLLM gives a logits processor nothing but the logits tensor (plus batch bookkeeping), while the
per-row interpolation needs the policy-minus-reference difference that only `compute_logits` sees.
So `compute_logits` publishes the step's terms here and the processor takes them in the sampler of
the same step, in the same worker process. vLLM also calls `compute_logits` for prompt log-probs
and for warm-up runs, so a processor must never consume terms that belong to other logits. `take`
therefore refuses, with HandoffError, terms that:
- were never published, or were already taken (one publication feeds exactly one sampler call);
- have another shape than the logits (row count = requests in the batch, width = vocabulary);
- (V1 model runner) are not the very tensor compute_logits returned: the V1 sampler works in place
  on that tensor when it is float32, which compute_logits guarantees, so any copy in between means the
  logits came from somewhere else. Model Runner V2 copies logits before its processors, so there
  only shape and freshness are checked.

One channel per engine, keyed by the vLLM config's instance id: model and processor are built from
the same config object inside one worker, and two engines in one process do not share a channel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch


class HandoffError(RuntimeError):
    """The logits a processor received are not the ones the interpolated model published."""


@dataclass(frozen=True)
class InterpolationTerms:
    """One step's logits in the form z(w) = base + (w - w_base) * delta."""

    base: torch.Tensor  # [R, V] float32: what compute_logits returned, the interpolation at w = w_base
    delta: torch.Tensor  # [R, V] float32: h_policy - h_ref (0 in columns the reference lacks)
    w_base: float
    # First column past the shared vocabulary (policy vocabulary wider than the reference's): never
    # sampled, in any row (the vocabulary rule, docs/interpolation.md). None when every column may be sampled.
    banned_from: int | None


class LogitsHandoff:
    def __init__(self) -> None:
        self._terms: InterpolationTerms | None = None
        self._published = 0
        self._taken = 0

    def publish(self, terms: InterpolationTerms) -> None:
        if terms.base.dtype != torch.float32 or terms.delta.dtype != torch.float32:
            raise HandoffError(f"terms must be float32, got base {terms.base.dtype} and delta {terms.delta.dtype}")
        if terms.base.shape != terms.delta.shape or terms.base.dim() != 2:
            raise HandoffError(
                f"base {tuple(terms.base.shape)} and delta {tuple(terms.delta.shape)} must be equal [R, V]"
            )
        self._terms = terms
        self._published += 1

    def take(self, logits: torch.Tensor, *, same_tensor: bool) -> InterpolationTerms:
        terms = self._terms
        if terms is None:
            state = "already taken" if self._published else "never published"
            raise HandoffError(
                f"the interpolation terms for these logits {tuple(logits.shape)} were {state}: the logits processor "
                "ran without a matching PilafInterpolatedForCausalLM.compute_logits call (is the engine's model the "
                "interpolated architecture? speculative decoding and pipeline parallelism are unsupported)"
            )
        if tuple(logits.shape) != tuple(terms.base.shape):
            raise HandoffError(
                f"the sampler's logits are {tuple(logits.shape)} but compute_logits published {tuple(terms.base.shape)}"
                " (rows = requests in the batch, columns = vocabulary): they belong to different model calls"
            )
        if same_tensor and logits.data_ptr() != terms.base.data_ptr():
            raise HandoffError(
                "the sampler's logits are not the tensor compute_logits returned (a copy or other logits reached the "
                "processor); refusing to interpolate rows that may not match"
            )
        self._terms = None  # one publication feeds one sampler call, and the [R, V] tensors are freed
        self._taken += 1
        return terms

    @property
    def counts(self) -> tuple[int, int]:
        """(published, taken) since the engine started; for tests and debugging."""
        return self._published, self._taken


_CHANNELS: dict[str, LogitsHandoff] = {}
_LOCK = threading.Lock()


def channel_for(vllm_config) -> LogitsHandoff:
    """The hand-off channel of the engine this vLLM config belongs to (created on first use)."""
    key = getattr(vllm_config, "instance_id", "") or f"object-{id(vllm_config)}"
    with _LOCK:
        return _CHANNELS.setdefault(key, LogitsHandoff())
