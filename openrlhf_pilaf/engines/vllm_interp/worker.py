"""OpenRLHF's vLLM weight-sync worker extension, extended to vLLM's CPU backend.

OpenRLHF's `WorkerWrap.update_weight` receives each parameter over NCCL into a CUDA tensor and
hands it to `model.load_weights`. On vLLM's CPU backend both steps fail: there is no CUDA, and
after loading, vLLM repacks linear weights for its CPU kernels and empties the original
parameters, so a later `load_weights` has nowhere to write ("Attempted to load weight ... into
parameter (torch.Size([0]))") and `lm_head` silently keeps its stale packed copy. vLLM's layerwise
in-place reload restores checkpoint-format parameters, loads and repacks again; it needs every
piece of a fused layer (q/k/v, gate/up) in one call. OpenRLHF marks the last parameter of a sync
with `empty_cache=True`, so on CPU we buffer the received tensors and reload once at that mark.

Models may name the part of themselves that synced weights belong to: the interpolated model
(`engines/vllm_interp`) answers `pilaf_weight_sync_module()` with its policy half, so a sync never
touches the frozen reference. Synced weights also make cached KV blocks stale: as OpenRLHF's trainer
does, call the engine's `reset_prefix_cache` after a sync when prefix caching is on (a worker cannot
reach the scheduler that owns the cache).

Our rollout engines select it (`engines.vllm_interp.rollout_actors.create_rollout_engines`, plain or
interpolated): OpenRLHF's own `create_vllm_engines` hard-codes its `WorkerWrap`. For an offline
engine, pass `vllm.LLM(..., worker_extension_cls=PILAF_WORKER_EXTENSION)`.
"""

from __future__ import annotations

import logging

import torch
from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

logger = logging.getLogger(__name__)

PILAF_WORKER_EXTENSION = "openrlhf_pilaf.engines.vllm_interp.worker.PilafWorkerWrap"


class PilafWorkerWrap(WorkerWrap):
    """Same RPC surface as OpenRLHF's WorkerWrap; device-aware receive, CPU-safe load."""

    def update_weight(self, name, dtype, shape, empty_cache=False):
        if dtype != self.model_config.dtype:
            raise TypeError(
                f"weight sync of {name}: the trainer sends {dtype} but the vLLM engine runs in "
                f"{self.model_config.dtype}; start the engine with the trainer's dtype"
            )
        weight = torch.empty(shape, dtype=dtype, device=self.device)
        if self._model_update_with_ray:
            import ray.util.collective as collective

            collective.broadcast(weight, 0, group_name=self._model_update_group)
        elif self.device.type == "cuda":
            self._model_update_group.broadcast(weight, src=0, stream=torch.cuda.current_stream())
        else:
            self._model_update_group.broadcast(weight, src=0)
        self._load_synced_weight(name, weight, last=empty_cache)

    def pilaf_tokens_run(self) -> dict[str, int] | None:
        """Token rows each half of an interpolated model has run (None for a plain engine): what the engine
        actually computed, for the forward counters and the benchmarks. `LLM.collective_rpc("pilaf_tokens_run")`."""
        counts = getattr(self.model_runner.model, "pilaf_tokens_run", None)
        return None if counts is None else counts()

    def _weight_sync_module(self) -> torch.nn.Module:
        """The module synced weights load into: the model, or the part it names (see module docstring)."""
        model = self.model_runner.model
        named = getattr(model, "pilaf_weight_sync_module", None)
        return model if named is None else named()

    def _load_synced_weight(self, name: str, weight: torch.Tensor, last: bool) -> None:
        if self.device.type != "cpu":
            self._weight_sync_module().load_weights(weights=[(name, weight)])
            return
        pending = self.__dict__.setdefault("_pilaf_pending_weights", [])
        pending.append((name, weight))
        if last:
            self._reload_in_place(pending)
            pending.clear()

    def _reload_in_place(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """vLLM's layerwise in-place reload: put the layers back in checkpoint format, load, and process
        each layer again once all its pieces arrived, which rebuilds whatever CPU GEMM layout vLLM chose for
        it (packed, prepacked, or the plain weight). Called through its primitives, which vLLM 0.29 to 0.34
        all export from `model_loader.reload` (0.32's `reload.inplace.reload_weights` wraps the same steps;
        0.29 to 0.31 have them only inside their GPU model runner)."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

        target = self._weight_sync_module()
        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(target)
            loaded = target.load_weights(iter(weights))
            finalize_layerwise_reload(target, self.model_config)
        logger.info(
            "reloaded %d synced tensors into the vLLM CPU model (%s, %d parameters loaded)",
            len(weights),
            type(target).__name__,
            len(loaded or ()),
        )

    def pilaf_weight_fingerprints(self) -> dict[str, dict[str, str | int]]:
        """RPC: weight fingerprints per half of the model (policy / reference for the interpolated model)."""
        from openrlhf_pilaf.engines.vllm_interp.fingerprint import model_fingerprints

        return model_fingerprints(self.model_runner.model)
