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

The channel also carries one message the other way, before the step: the V1 runner calls the processor's
`update_state` before the model's forward, and the processor, which alone knows every row's w, says which
rows of the coming forward need the reference half (`plan_step`). The model reads that plan once
(`take_step_plan`; a forward without a plan runs both halves on every row, so warm-up, profiling and Model
Runner V2, which has no such hook, are never wrong). When no row needs it, the model runs the policy half
only and publishes terms without a difference (`delta=None`); the processor refuses those for a batch in
which some row sits at another w. When some rows do, the model runs the reference half on their tokens only
(reference_rows.py), using the step's attention-metadata builds that the channel also keeps
(`record_build` / `take_builds`).

One channel per engine, keyed by the vLLM config's instance id: model and processor are built from
the same config object inside one worker, and two engines in one process do not share a channel.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch


class HandoffError(RuntimeError):
    """The logits a processor received are not the ones the interpolated model published."""


@dataclass(frozen=True)
class InterpolationTerms:
    """One step's logits in the form z(w) = base + (w - w_base) * delta."""

    base: torch.Tensor  # [R, V] float32: what compute_logits returned, the interpolation at w = w_base
    # [R, V] float32: h_policy - h_ref (0 in columns the reference lacks); None when the reference half did not
    # run this step (every row at w = w_base = 0, see plan_step)
    delta: torch.Tensor | None
    w_base: float
    # First column past the shared vocabulary (policy vocabulary wider than the reference's): never
    # sampled, in any row (the vocabulary rule, docs/interpolation.md). None when every column may be sampled.
    banned_from: int | None


@dataclass(frozen=True)
class StepPlan:
    """What the coming forward must run, from the processor that knows every row's w (V1 runner)."""

    reference: bool  # run the reference half at all
    # the batch rows (requests, in the step's order) that need it when only some do; None: every row
    rows: np.ndarray | None = None
    batch_size: int | None = None  # rows in the batch this plan describes (None: unknown)


_BOTH_HALVES = StepPlan(True)


class LogitsHandoff:
    def __init__(self) -> None:
        self._terms: InterpolationTerms | None = None
        self._published = 0
        self._taken = 0
        self._plan = _BOTH_HALVES
        self._tokens_run = {"policy": 0, "reference": 0}
        self._build_layers: frozenset[str] = frozenset()
        self._builds: list[tuple[object, object]] = []

    # ---- before the forward: which rows need the reference half?
    def plan_step(self, reference_needed: bool, rows: np.ndarray | None = None, batch_size: int | None = None) -> None:
        """The processor (V1 runner, `update_state`): whether the coming forward has a row that needs the reference,
        and, when only some do, which (`rows`, of a batch of `batch_size`)."""
        self._plan = StepPlan(bool(reference_needed), rows if reference_needed else None, batch_size)

    def take_step_plan(self) -> StepPlan:
        """The model (`forward`): what to run. One plan serves one forward; without a fresh plan both halves
        run on every row, the safe default."""
        plan, self._plan = self._plan, _BOTH_HALVES
        return plan

    def capture_builds_for(self, layer_names: frozenset[str]) -> None:
        """Keep the attention-metadata builds that serve these layers (reference_rows.install_build_capture)."""
        self._build_layers = frozenset(layer_names)

    def record_build(self, builder, common_attn_metadata) -> None:
        if self._build_layers.intersection(getattr(builder, "layer_names", ())):
            self._builds.append((builder, common_attn_metadata))

    def take_builds(self) -> list[tuple[object, object]]:
        """The (builder, common metadata) pairs recorded since the last call: this step's, read by its forward."""
        builds, self._builds = self._builds, []
        return builds

    def count_tokens(self, half: str, tokens: int) -> None:
        """Tokens each half ran (the forward's input rows), for `tokens_run` and the benchmarks."""
        self._tokens_run[half] += int(tokens)

    @property
    def tokens_run(self) -> dict[str, int]:
        """{"policy": n, "reference": n}: token rows each half has run since the engine started."""
        return dict(self._tokens_run)

    # ---- after the forward: the step's logits
    def publish(self, terms: InterpolationTerms) -> None:
        delta_dtype = None if terms.delta is None else terms.delta.dtype
        if terms.base.dtype != torch.float32 or delta_dtype not in (None, torch.float32):
            raise HandoffError(f"terms must be float32, got base {terms.base.dtype} and delta {delta_dtype}")
        if terms.base.dim() != 2 or (terms.delta is not None and terms.base.shape != terms.delta.shape):
            delta_shape = None if terms.delta is None else tuple(terms.delta.shape)
            raise HandoffError(f"base {tuple(terms.base.shape)} and delta {delta_shape} must be equal [R, V]")
        if terms.delta is None and terms.w_base != 0.0:
            raise HandoffError(f"terms without a difference must be the policy's (w_base 0), not w_base {terms.w_base}")
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
